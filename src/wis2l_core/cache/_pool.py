"""A bounded Redis connection pool with a lock-free borrow when a connection is idle.

redis-py's ``BlockingConnectionPool`` takes an ``asyncio.Condition`` and starts a timeout
on every borrow and every return, even when a connection sits idle; that is most of the
gap between the caches and raw redis-py. :class:`BoundedPool` keeps what it is used for
(at most ``max_connections`` sockets; a borrower that finds them all busy waits up to
``timeout`` instead of failing at once) and makes the common case plain list operations:

- borrow: pop an idle connection, or make one while fewer than ``max_connections``
  exist, else queue a future and wait for a return (first come, first served);
- return: hand the connection straight to the oldest waiter, else push it back idle.

Both are synchronous between awaits, so a return cannot be interrupted by a
cancellation, and a waiter cancelled after it was handed a connection passes it on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError

__all__ = ["BoundedPool"]


class BoundedPool(ConnectionPool):
    """At most ``max_connections`` connections; a borrower waits up to ``timeout`` for one.

    Args:
        max_connections: the most connections open at once (idle and in use).
        timeout: seconds to wait for a connection when all are in use, then
            ``redis.exceptions.ConnectionError``; None waits as long as it takes.
        **connection_kwargs: passed to each connection, as for ``ConnectionPool``.
    """

    def __init__(
        self, max_connections: int = 50, timeout: float | None = 20, **connection_kwargs: Any
    ) -> None:
        super().__init__(max_connections=max_connections, **connection_kwargs)
        self.timeout = timeout
        self._waiters: deque[asyncio.Future[AbstractConnection | None]] = deque()

    async def get_connection(self, *_: Any, **__: Any) -> AbstractConnection:
        """Borrow a connected connection, waiting up to ``timeout`` when all are busy.

        Raises:
            redis.exceptions.ConnectionError: none came free within ``timeout``, or the
                connection could not be established.
        """
        idle = self._available_connections
        if idle:  # the fast path: no lock, no timer
            conn = idle.pop()
            self._in_use_connections.add(conn)
        elif len(self._in_use_connections) < self.max_connections:
            conn = self.make_connection()  # type: ignore[no-untyped-call]
            self._in_use_connections.add(conn)
        else:
            conn = await self._wait()
        try:
            await self.ensure_connection(conn)
        except BaseException:
            self._put(conn)
            raise
        return conn

    async def _wait(self) -> AbstractConnection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):  # one budget, however many wake-ups
                while True:
                    fut: asyncio.Future[AbstractConnection | None] = loop.create_future()
                    self._waiters.append(fut)
                    try:
                        conn = await fut
                    except BaseException:
                        self._abandon(fut)
                        raise
                    if conn is not None:
                        return conn  # still counted in use: ownership moved to us
                    # A place came free: make a connection unless another task took it.
                    if self._available_connections:
                        conn = self._available_connections.pop()
                    elif len(self._in_use_connections) < self.max_connections:
                        conn = self.make_connection()  # type: ignore[no-untyped-call]
                    else:
                        continue
                    self._in_use_connections.add(conn)
                    return conn
        except TimeoutError as exc:
            raise RedisConnectionError("No connection available.") from exc

    def _abandon(self, fut: asyncio.Future[AbstractConnection | None]) -> None:
        """A waiter leaves (timeout, cancellation): pass on what it was handed, if anything."""
        if fut.done() and not fut.cancelled():
            given = fut.result()
            if given is not None:
                self._put(given)
            else:
                self._wake()
            return
        fut.cancel()
        with contextlib.suppress(ValueError):  # already popped by a return
            self._waiters.remove(fut)

    def _put(self, conn: AbstractConnection) -> None:
        """Give ``conn`` (counted in use) to the oldest waiter, or make it idle."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._in_use_connections.discard(conn)
        self._available_connections.append(conn)

    def _wake(self) -> None:
        """Tell the oldest waiter there is room for a new connection."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def release(self, connection: AbstractConnection) -> None:
        """Return a borrowed connection (disconnecting it first if it asked to be)."""
        if connection not in self._in_use_connections:
            return  # returned twice, or the pool was reset meanwhile
        if connection.should_reconnect():  # type: ignore[no-untyped-call]
            try:
                await connection.disconnect()
            finally:
                self._put(connection)
            return
        self._put(connection)

    def reset(self) -> None:
        """Forget every connection (redis-py calls this from the constructor and on fork)."""
        super().reset()  # type: ignore[no-untyped-call]
        for waiter in getattr(self, "_waiters", ()):
            if not waiter.done():
                waiter.set_result(None)
        if hasattr(self, "_waiters"):
            self._waiters.clear()
