"""A worker process for tests/test_lifecycle.py: ``run_until_signal()`` with a slow handler.

Usage: ``python lifecycle_worker.py MARKER_DIR SLEEP_SECONDS``, with the runtime's settings
in the environment (``DATABASE_URL``, ``REDIS_URL``, ``NATS_URL``, ``WIS2L_NAMESPACE``,
``WIS2L_STREAM``, ``WIS2L_SHUTDOWN_TIMEOUT``, ...).

Each ``BuildProgress`` it handles leaves ``<event id>.<pid>.started`` in MARKER_DIR, then,
after sleeping, ``<event id>.<pid>.done``. When ``run_until_signal()`` returns it leaves
``exit.<pid>``, so the test knows the process got to the end of ``main`` on its own.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from wis2l_core import Settings, Wis2l
from wis2l_core.events import BuildProgress

DURABLE = "lifecycle"
ACK_WAIT = 2.0


def subscribe(wis: Wis2l, markers: Path, sleep: float) -> None:
    """Register the slow handler on ``wis`` (the test's second runtime uses it too)."""

    @wis.bus.subscribe(BuildProgress, durable=DURABLE, concurrency=1, ack_wait=ACK_WAIT)
    async def handle(event: BuildProgress) -> None:
        pid = os.getpid()
        (markers / f"{event.id}.{pid}.started").touch()
        await asyncio.sleep(sleep)
        (markers / f"{event.id}.{pid}.done").touch()


async def main(markers: Path, sleep: float) -> None:
    wis = Wis2l(Settings.from_env(), seed_subscribers=False)
    subscribe(wis, markers, sleep)
    await wis.run_until_signal()
    (markers / f"exit.{os.getpid()}").touch()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), float(sys.argv[2])))
