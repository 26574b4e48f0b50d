"""asyncio helpers shared by the runtime's background tasks."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(*tasks: asyncio.Task[Any] | asyncio.Future[Any]) -> None:
    """Cancel ``tasks`` and wait until each has ended, cancelling again if needed.

    On Python 3.11 ``asyncio.wait_for`` swallows a cancellation that lands just as its
    inner future finishes (gh-86296); nats-py and psycopg_pool use it, so one ``cancel()``
    may be lost and a plain ``await task`` would then wait forever.
    """
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.1)
    await asyncio.gather(*tasks, return_exceptions=True)
