"""psycopg_pool's private parts, in one place (written against psycopg-pool 3.3).

:class:`~wis2l_core.db.pool.Pool` needs a few things psycopg_pool has no public API for:
handing an idle connection out and back without the pool's lock, discarding every
connection at once after a failover, pacing reconnect attempts, and knowing when an
attempt to connect is under way. Every private attribute or method of psycopg_pool (and
of a psycopg connection) that this takes is read or overridden here, and nowhere else.
:func:`check` lists what this module expects of the installed versions; the test suite
runs it (tests/test_pool_internals.py), so a release that renamed or reshaped one of them
fails naming it. Upgrading psycopg_pool is then this file (and the pin in pyproject.toml).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Coroutine
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import psycopg
from psycopg import pq
from psycopg.rows import DictRow
from psycopg_pool import AsyncConnectionPool
from psycopg_pool.pool_async import AddConnection, MaintenanceTask

__all__ = ["PoolInternals", "check", "clean", "unfinished"]

_Conn = psycopg.AsyncConnection[DictRow]

_IDLE = pq.TransactionStatus.IDLE

POOL_ATTRIBUTES = (
    "_pool",  # deque of idle connections
    "_closed",
    "_check",  # the check callback (None: none)
    "_reset",  # the reset callback
    "_waiting",  # deque of clients waiting for a connection
    "_lock",  # asyncio.Lock guarding the state above
    "_pool_full_event",  # set while wait() waits for the pool to fill
    "_nconns_min",  # the low-water mark of idle connections (shrinking)
    "_stats",  # counters
    "_REQUESTS_NUM",  # the counter of served requests
    "_drained_at",  # monotonic time of the last drain(): older connections are stale
)
"""Attributes of psycopg_pool's ``AsyncConnectionPool`` read or written here."""

CONNECTION_ATTRIBUTES = (
    "_pool",  # the pool a connection is lent by (None while idle)
    "_created_at",  # set by the pool when it connects
    "_expire_at",  # ditto: max_lifetime with jitter
    "_pipeline",  # psycopg: the active pipeline, or None
    "_num_transactions",  # psycopg: open transaction blocks
)
"""Attributes of a pooled psycopg connection read or written here."""

METHODS = {
    "_connect": ("timeout",),
    "_add_connection": ("attempt", "growing"),
    "_putconn": ("conn", "from_getconn"),
    "_close_connection": ("conn",),
    "_jitter": ("value", "min_pc", "max_pc"),
    "schedule_task": ("task", "delay"),
    "run_task": ("task",),
    "drain": (),
}
"""psycopg_pool's methods called or overridden here, with their parameters."""


class PoolInternals(AsyncConnectionPool[_Conn]):
    """psycopg_pool's pool, its private parts behind named methods and hooks.

    Hooks for a subclass: :meth:`attempting` (around each attempt to connect),
    :meth:`retry_delay` (the wait before the next attempt) and :meth:`new_connection`
    (making one; :meth:`driver_connect` is psycopg_pool's own way).
    """

    # -- hooks -----------------------------------------------------------------------------

    def attempting(self) -> AbstractContextManager[None]:
        """A context around each background attempt to connect (default: nothing)."""
        return nullcontext()

    def retry_delay(self, delay: float) -> float:
        """Seconds before the next attempt to connect, psycopg_pool's ``delay`` given."""
        return delay

    async def new_connection(self, timeout: float | None) -> _Conn:
        """Make a connection for the pool (default: :meth:`driver_connect`)."""
        return await self.driver_connect(timeout)

    async def driver_connect(self, timeout: float | None) -> _Conn:
        """psycopg_pool's own way to make a connection (kwargs, configure, lifetime)."""
        return await super()._connect(timeout)

    def jitter(self, value: float, min_pc: float, max_pc: float) -> float:
        """``value`` moved by a random fraction in ``[min_pc, max_pc]`` (psycopg_pool's)."""
        return self._jitter(value, min_pc, max_pc)

    async def _add_connection(self, *args: Any, **kwargs: Any) -> None:
        with self.attempting():
            await super()._add_connection(*args, **kwargs)

    async def schedule_task(self, task: MaintenanceTask, delay: float) -> None:
        """psycopg_pool's delayed task; an attempt to connect waits :meth:`retry_delay`."""
        if isinstance(task, AddConnection):
            delay = self.retry_delay(delay)
        await super().schedule_task(task, delay)

    async def _connect(self, timeout: float | None = None) -> _Conn:
        return await self.new_connection(timeout)

    # -- state -----------------------------------------------------------------------------

    def has_idle(self) -> bool:
        """True if a connection is idle in the pool."""
        return bool(self._pool)

    # -- the lock-free borrow path ---------------------------------------------------------

    def take_idle(self) -> _Conn | None:
        """An idle connection taken from the pool at once, or ``None`` (use ``getconn``).

        Only when nobody holds the pool's lock or waits and no check is configured: in
        asyncio nothing else runs between the look and the move, so this is what
        ``getconn`` would do, without its lock and condition round trip.
        """
        if self._closed or self._check is not None or self._waiting or self._lock.locked():
            return None
        idle = self._pool
        if not idle:
            return None
        conn = idle.popleft()
        self._nconns_min = min(self._nconns_min, len(idle))
        self._stats[self._REQUESTS_NUM] += 1
        conn._pool = self
        return conn

    def put_idle(self, conn: _Conn) -> bool:
        """Put a clean connection back at once; ``False`` if ``putconn`` must do it.

        ``putconn`` must when a reset is configured, clients wait, the pool is filling or
        locked, or ``conn`` is in a transaction, stale (made before a drain) or expired.
        """
        if (
            self._closed
            or self._reset is not None
            or self._waiting
            or self._pool_full_event is not None
            or self._lock.locked()
            or not clean(conn)
            or conn._created_at <= self._drained_at
            or conn._expire_at <= time.monotonic()
        ):
            return False
        conn._pool = None
        self._pool.append(conn)
        return True

    # -- after a failover ------------------------------------------------------------------

    def made_before_drain(self, conn: _Conn) -> bool:
        """True if ``conn`` was made before the pool's last drain (or not by the pool)."""
        return getattr(conn, "_created_at", 0.0) <= self._drained_at

    def drain_at_once(self) -> Coroutine[Any, Any, None]:
        """Mark every connection made so far stale and take the idle ones out, now.

        Synchronous, so no other task is handed an idle connection in between; those in
        use are closed when they come back.

        Returns:
            The rest of the work, to await: closing the idle connections and opening
            their replacements (psycopg_pool's ``drain`` when its lock is held).
        """
        self._drained_at = time.monotonic()
        if self._lock.locked():  # psycopg_pool is mid-update: drain() does it under the lock
            return self.drain()
        stale = list(self._pool)
        self._pool.clear()
        return self._replace(stale)

    async def _replace(self, stale: list[_Conn]) -> None:
        for conn in stale:
            await self._close_connection(conn)
            self.run_task(AddConnection(self))

    async def put_back_lost(self, conn: _Conn) -> None:
        """Give back a connection we closed: counted as lost and replaced quietly.

        psycopg_pool's path for a connection found broken before use, without the
        warning ``putconn`` logs for a closed one.
        """
        await self._putconn(conn, from_getconn=True)


def unfinished(conn: _Conn) -> bool:
    """True if ``conn`` is in pipeline mode or inside a transaction block of psycopg's."""
    return conn._pipeline is not None or bool(conn._num_transactions)


def clean(conn: _Conn) -> bool:
    """True if ``conn`` is idle, outside any transaction block and out of pipeline mode."""
    return (
        conn.pgconn.transaction_status == _IDLE
        and conn._pipeline is None
        and not conn._num_transactions
    )


def check(pool: AsyncConnectionPool[Any], conn: psycopg.AsyncConnection[Any]) -> list[str]:
    """What this module expects of psycopg_pool and psycopg but did not find.

    Args:
        pool: an open pool (psycopg_pool makes its lock when it opens).
        conn: a connection borrowed from it.

    Returns:
        One line per missing attribute or changed method (empty: all is as expected).
    """
    problems = [
        f"AsyncConnectionPool.{name} is missing"
        for name in POOL_ATTRIBUTES
        if not hasattr(pool, name)
    ]
    problems += [
        f"a pooled connection's {name} is missing"
        for name in CONNECTION_ATTRIBUTES
        if not hasattr(conn, name)
    ]
    # psycopg_pool's class (or whatever the caller's pool derives from), not our overrides
    base = next(c for c in type(pool).__mro__ if not c.__module__.startswith("wis2l_core."))
    for name, expected in METHODS.items():
        method = getattr(base, name, None)
        if method is None:
            problems.append(f"{base.__name__}.{name}() is missing")
            continue
        params = [p for p in inspect.signature(method).parameters if p != "self"]
        if tuple(params) != expected:
            problems.append(
                f"{base.__name__}.{name}() takes ({', '.join(params)}),"
                f" expected ({', '.join(expected)})"
            )
    return problems
