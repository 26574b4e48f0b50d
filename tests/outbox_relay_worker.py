"""A relay process for tests/test_outbox_partitions.py and the relay bench case.

Usage: ``python outbox_relay_worker.py STATUS_FILE LEASE POLL ACK_DELAY [BATCH]``, with the
runtime's settings in the environment (``DATABASE_URL``, ``NATS_URL``,
``WIS2L_NAMESPACE``, ``WIS2L_STREAM``, ``WIS2L_OUTBOX_PARTITIONS``).

Runs one :class:`OutboxRelay` (no app, no subscribers) until SIGTERM. Within 50 ms of a
change (and once a second otherwise) it rewrites STATUS_FILE (JSON: pid, relay id, events
published, home partitions, relays seen, batches sent, CPU used). With ACK_DELAY > 0 each
batch waits that long after it was sent before its acks are read, which holds the pass's
transaction open between publish and mark: a signal sent while ``inflight`` > 0 lands
mid-batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wis2l_core.config import Settings
from wis2l_core.db.pool import Database
from wis2l_core.events.bus import EncodedEvent, EventBus, PendingAcks
from wis2l_core.events.outbox import OutboxRelay


class _Delayed:
    def __init__(self, pending: PendingAcks, delay: float, counters: dict[str, int]) -> None:
        self.pending, self.delay, self.counters = pending, delay, counters

    async def wait(self, timeout: float = 5.0) -> list[BaseException | None]:
        await asyncio.sleep(self.delay)
        try:
            return await self.pending.wait(timeout)
        finally:
            self.counters["inflight"] -= 1


async def main(status: Path, lease: float, poll: float, ack_delay: float, batch: int) -> None:
    settings = Settings.from_env()
    db = Database(settings)
    await db.open()
    bus = EventBus(settings)
    await bus.open()
    counters = {"sent": 0, "inflight": 0}
    if ack_delay > 0:
        send = bus.send_encoded

        async def delayed_send(messages: Sequence[EncodedEvent]) -> Any:
            pending = await send(messages)
            counters["sent"] += 1
            counters["inflight"] += 1
            return _Delayed(pending, ack_delay, counters)

        bus.send_encoded = delayed_send  # type: ignore[method-assign]
    relay = OutboxRelay(settings, db, bus, batch_size=batch, poll_interval=poll, lease=lease)
    await relay.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    tmp = status.with_suffix(".tmp")
    last: dict[str, Any] = {}
    written = 0.0
    while not stop.is_set():
        state = {
            "pid": os.getpid(),
            "relay": relay.relay_id,
            "published": relay.published,
            "home": list(relay.home),
            "relays": len(relay.relays),
            "bus_ready": bus.ready,
            "running": relay.running,
            **counters,
        }
        # Written when something changed, else once a second (with the CPU used so far):
        # twenty writes a second cost an idle relay three times its own CPU.
        now = time.monotonic()
        if state != last or now - written >= 1.0:
            last, written = state, now
            tmp.write_text(json.dumps(state | {"cpu_s": sum(os.times()[:2])}))
            tmp.replace(status)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)
    await relay.stop(2)
    await bus.close(2)
    await db.close()


if __name__ == "__main__":
    args = sys.argv[1:]
    batch = int(args[4]) if len(args) > 4 else 200
    asyncio.run(main(Path(args[0]), float(args[1]), float(args[2]), float(args[3]), batch))
