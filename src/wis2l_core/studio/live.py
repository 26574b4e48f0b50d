"""The live panel: events as they arrive on NATS, fanned out to Server-Sent Events clients.

One plain core-NATS subscription on ``<namespace>.>`` (every event the outbox relay or
``wis.bus.publish`` sends, dead letters included) feeds a bounded queue per browser tab. It
reads, never acknowledges: JetStream consumers of the app are not disturbed. NATS down at
start is retried in the background; the panel says so meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from wis2l_core.catalogue import event_payload
from wis2l_core.config import Settings
from wis2l_core.events.cloudevents import decode_message
from wis2l_core.subjects import dlq_prefix, event_type_of, stream_subjects

__all__ = ["LiveFeed"]

log = logging.getLogger("wis2l_core.studio")

_QUEUE = 200
_HEARTBEAT_S = 10.0


class LiveFeed:
    """Subscribe once, fan out to every open panel.

    Args:
        settings: ``nats_urls``, ``namespace`` and ``nats_connect_timeout`` are used.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._clients: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self._nc: NatsClient | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        """True while the subscription's connection is up."""
        return self._nc is not None and self._nc.is_connected

    async def start(self) -> None:
        """Connect and subscribe in the background (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._connect(), name="wis2l-studio-live")

    async def stop(self) -> None:
        """Unsubscribe, disconnect, and end every open stream."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        nc, self._nc = self._nc, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()
        self.end_streams()

    def end_streams(self) -> None:
        """End every open stream now (a server shutting down must not wait for them)."""
        for queue in list(self._clients):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    async def _connect(self) -> None:
        while True:
            try:
                nc = await nats.connect(
                    servers=list(self.settings.nats_urls),
                    connect_timeout=self.settings.nats_connect_timeout,
                    max_reconnect_attempts=-1,
                    allow_reconnect=True,
                    name="wis2l-studio",
                )
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                log.info("studio: NATS not reachable yet (%s); retrying", exc)
                await asyncio.sleep(2.0)
                continue
            self._nc = nc
            await nc.subscribe(stream_subjects(self.settings.namespace), cb=self._on_message)
            return

    async def _on_message(self, msg: Msg) -> None:
        item = self.describe(msg)
        for queue in list(self._clients):
            with contextlib.suppress(asyncio.QueueFull):  # a stalled tab misses events
                queue.put_nowait(item)

    def describe(self, msg: Msg) -> dict[str, Any]:
        """A message as the panel shows it: subject, type, project and fields."""
        ns = self.settings.namespace
        subject_type = event_type_of(ns, msg.subject)
        item: dict[str, Any] = {"subject": msg.subject}
        if msg.subject.startswith(dlq_prefix(ns)):
            item.update(type=subject_type, dead_letter=True)
            return item
        try:
            event = decode_message(msg.data, msg.headers, subject_type=subject_type)
        except ValueError as exc:
            item.update(type=subject_type, error=str(exc))
            return item
        payload = json.loads(json.dumps(event_payload(event), default=str))
        item.update(type=event.type, project_id=payload.get("project_id"), payload=payload)
        return item

    async def stream(self, disconnected: Any) -> AsyncIterator[str]:
        """Server-Sent Events for one client until it leaves or the feed stops.

        Args:
            disconnected: an async callable answering whether the client has gone
                (``request.is_disconnected``).
        """
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(_QUEUE)
        self._clients.add(queue)
        try:
            yield "retry: 2000\n\n"
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), _HEARTBEAT_S)
                except TimeoutError:
                    if await disconnected():
                        return
                    yield ": keep-alive\n\n"
                    continue
                if item is None:
                    return
                yield f"event: nats\ndata: {json.dumps(item)}\n\n"
        finally:
            self._clients.discard(queue)
