"""Interoperability: a JavaScript NATS client (the npm ``nats`` package) and wis2l-core
exchange CloudEvents (NATS binding, binary content mode) both ways.

Needs node and npm; CI installs the client with ``npm ci --prefix tests/interop``. When
node_modules is missing and npm is present, the test installs it itself (``npm ci``).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from helpers import npm_packages
from wis2l_core.events import BuildProgress, EventBus, encode_event

INTEROP = Path(__file__).parent / "interop"
SCRIPT = INTEROP / "cloudevents.mjs"


@pytest.fixture(scope="module")
def node() -> str:
    return npm_packages(INTEROP, "nats")


async def run_js(node: str, *args: str) -> Any:
    proc = await asyncio.create_subprocess_exec(
        node,
        str(SCRIPT),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return json.loads(out)


async def test_a_javascript_cloudevent_without_type_reaches_a_typed_subscriber(
    node: str, bus: EventBus
) -> None:
    seen: list[BuildProgress] = []
    got = asyncio.Event()

    @bus.subscribe(BuildProgress, durable="interop")
    async def handle(event: BuildProgress) -> None:
        seen.append(event)
        got.set()

    await bus.start_subscribers()
    sent = BuildProgress(project_id=uuid.uuid4(), build_id=uuid.uuid4(), progress=61)
    body = json.loads(encode_event(sent))
    del body["type"]  # exactly the documented fields, as another service sends them
    subject = bus.subject(BuildProgress)
    ack = await run_js(node, "publish", bus.settings.nats_urls[0], subject, json.dumps(body))
    assert ack["seq"] >= 1
    await asyncio.wait_for(got.wait(), 15)
    assert seen == [sent]
    dlq = await bus.jetstream.stream_info(bus.settings.stream_name, subjects_filter=">")
    assert not any(".dlq." in s for s in (dlq.state.subjects or {}))


async def test_javascript_reads_our_cloudevent_headers(node: str, bus: EventBus) -> None:
    event = BuildProgress(project_id=uuid.uuid4(), build_id=uuid.uuid4(), progress=7)
    await bus.publish(event)
    subject = bus.subject(BuildProgress)
    seen = await run_js(node, "read", bus.settings.nats_urls[0], bus.settings.stream_name, subject)
    assert seen["body"] == json.loads(encode_event(event))
    assert seen["headers"]["ce-type"] == "wis2l.build.progress"
    assert seen["headers"]["ce-id"] == str(event.id)
    assert seen["headers"]["ce-source"] == f"/wis2l-core/{bus.namespace}"
