"""A private event loop in a background thread, for what needs NATS directly.

:class:`wis2l_core.sync.Wis2l` keeps the event bus (``bus.publish``), the outbox relay and
the NATS health check on this loop, never on the caller's: a synchronous call hands a
coroutine over (:meth:`BackgroundLoop.run`) and blocks on its result, so it works the same
in a plain script, in a Flask or Django worker thread, and inside Jupyter, whose own loop
is already running in the calling thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["BackgroundLoop"]

T = TypeVar("T")

log = logging.getLogger("wis2l_core.sync")


class BackgroundLoop:
    """An asyncio loop running in a daemon thread of its own, started and stopped explicitly.

    Args:
        name: the thread's name (seen in stack dumps).
    """

    def __init__(self, name: str = "wis2l-sync-loop") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._loop is not None

    def start(self) -> None:
        """Start the loop's thread (idempotent); returns once the loop runs."""
        with self._lock:
            if self._loop is not None:
                return
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def main() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            thread = threading.Thread(target=main, name=self._name, daemon=True)
            thread.start()
            ready.wait()
            self._loop, self._thread = loop, thread

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and return its result (or raise its exception).

        Blocks the calling thread, which may have an event loop of its own running
        (Jupyter): the coroutine never runs on that one.

        Raises:
            RuntimeError: the loop is not started, or this is the loop's own thread.
            TimeoutError: ``timeout`` seconds passed (the coroutine is cancelled).
        """
        loop = self._loop
        if loop is None:
            coro.close()
            raise RuntimeError("the background loop is not running: start the runtime first")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("BackgroundLoop.run called from the loop's own thread")
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel what still runs on the loop, stop it and join its thread (idempotent)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return

        async def cancel_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await loop.shutdown_asyncgens()

        try:
            asyncio.run_coroutine_threadsafe(cancel_rest(), loop).result(timeout)
        except Exception:
            log.warning("the background loop did not wind down cleanly", exc_info=True)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if not thread.is_alive():
            loop.close()
