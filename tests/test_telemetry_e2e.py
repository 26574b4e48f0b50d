"""One trace across three processes, as issue 21 asks to prove it.

examples/api_app.py runs under uvicorn behind OpenTelemetry's ASGI middleware, with its
own relay off (``WIS2L_OUTBOX_RELAY=false``); ``wis2l relay`` runs in a second process;
both export their spans over OTLP/HTTP to a receiver here, configured only by the
``OTEL_*`` variables (tests/otel_worker.py). A ``PATCH /builds/{id}`` writes
``build.started``; the relay process publishes it; a subscriber in this process handles
it and writes ``token.updated``, which the relay publishes to a second subscriber. The
request's server span, its write, both handlers and the second write are one trace, and
each relay ``send`` span links to the write it publishes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from tests.helpers import eventually
from tests.test_example_api_app import Output
from tests.test_relay_cli import _env
from tests.test_telemetry_surface import Receiver, receiver

from wis2l_core import Wis2l
from wis2l_core.events import BuildStarted, TokenUpdated
from wis2l_core.testing.telemetry import Captured

__all__ = ["receiver"]  # the fixture, used by name

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("otel_worker.py")
SERVER = 2  # opentelemetry.proto.trace.v1.Span.SpanKind.SPAN_KIND_SERVER
FAST = (0.05,)


def _spans(rec: Receiver, service: str) -> list[Any]:
    """The spans ``service`` exported to the receiver so far (protobuf ``Span``s)."""
    found = []
    for path, _, request in list(rec.requests):
        if path != "/v1/traces":
            continue
        for resource_spans in request.resource_spans:
            attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            if attrs.get("service.name") != service:
                continue
            for scope_spans in resource_spans.scope_spans:
                found += list(scope_spans.spans)
    return found


def _attr(span: Any, *keys: str) -> str | None:
    for a in span.attributes:
        if a.key in keys:
            return str(a.value.string_value)
    return None


def _ancestors(span: Any, by_id: dict[bytes, Any]) -> Iterator[Any]:
    while span.parent_span_id in by_id:
        span = by_id[span.parent_span_id]
        yield span


def _process(cap: Captured, durable: str) -> list[ReadableSpan]:
    return [
        s
        for s in cap.spans
        if s.name.startswith("process ")
        and (s.attributes or {}).get("messaging.consumer.group.name") == durable
    ]


def _bytes(value: int, size: int) -> bytes:
    return value.to_bytes(size, "big")


async def test_an_api_request_its_relay_and_two_handlers_are_one_trace(
    wis: Wis2l, wis2l_telemetry: Captured, receiver: Receiver, tmp_path: Path
) -> None:
    await wis.relay.stop()  # the relay process is the only relay
    seen: list[TokenUpdated] = []

    @wis.bus.subscribe(BuildStarted, durable="e2e-builder", backoff=FAST)
    async def builder(event: BuildStarted) -> None:  # writes a second event
        assert event.project_id is not None
        await wis.tokens.upsert(
            project_id=event.project_id, name="color.e2e", category="color", value="#101010"
        )

    @wis.bus.subscribe(TokenUpdated, durable="e2e-watcher", backoff=FAST)
    async def watcher(event: TokenUpdated) -> None:
        seen.append(event)

    base = {k: v for k, v in _env(wis.settings).items() if not k.startswith("WIS2L_OIDC_")}
    base |= {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    api_env = base | {"OTEL_SERVICE_NAME": "e2e-api", "WIS2L_OUTBOX_RELAY": "false"}
    relay_env = base | {"OTEL_SERVICE_NAME": "e2e-relay"}
    api_log = (tmp_path / "api.log").open("w")
    relay_log = (tmp_path / "relay.log").open("wb")
    api = subprocess.Popen(
        [sys.executable, str(WORKER), "api"],
        env=api_env,
        stdout=subprocess.PIPE,
        stderr=api_log,
        text=True,
    )
    relay = subprocess.Popen(
        [sys.executable, str(WORKER), "relay", "--lease", "2"],
        env=relay_env,
        stdout=relay_log,
        stderr=relay_log,
    )
    out = Output(api)
    try:
        await asyncio.to_thread(
            out.wait_for, lambda: any(row.startswith("serving ") for row in out.lines), 90
        )
        url = next(row for row in out.lines if row.startswith("serving ")).split()[1]
        token = next(row.split()[3] for row in out.lines if row.startswith("token      ada "))
        await eventually(lambda: "publishing" in (tmp_path / "relay.log").read_text(), 30)

        auth = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=url, headers=auth, timeout=30) as http:
            new = {"name": "Trace Keeper", "slug": "trace-keeper", "engine": "godot"}
            (await http.post("/projects", json=new)).raise_for_status()
            made = await http.post("/projects/trace-keeper/builds", json={"target": "html5"})
            made.raise_for_status()
            patched = await http.patch(f"/builds/{made.json()['id']}", json={"status": "building"})
            assert patched.status_code == 200, patched.text
        await eventually(lambda: len(seen) == 1, timeout=30)

        started = wis.bus.subject(BuildStarted)
        updated = wis.bus.subject(TokenUpdated)

        def exported() -> bool:
            names = {s.name for s in _spans(receiver, "e2e-relay")}
            return {f"send {started}", f"send {updated}"} <= names

        await eventually(exported, timeout=20)
        api.send_signal(signal.SIGINT)
        relay.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(api.wait, 30) == 0
        assert await asyncio.to_thread(relay.wait, 30) == 0
    finally:
        for proc in (api, relay):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        out.join()
        assert api.stdout is not None
        api.stdout.close()
        api_log.close()
        relay_log.close()

    api_spans = _spans(receiver, "e2e-api")
    by_id = {s.span_id: s for s in api_spans}
    (request,) = [
        s
        for s in api_spans
        if s.kind == SERVER and _attr(s, "http.request.method", "http.method") == "PATCH"
    ]
    trace_id = request.trace_id

    # The request's write: a transaction span under the server span, in the API process.
    (builder_span,) = _process(wis2l_telemetry, "e2e-builder")
    assert builder_span.parent is not None
    assert _bytes(builder_span.context.trace_id, 16) == trace_id
    write = by_id[_bytes(builder_span.parent.span_id, 8)]
    assert write.name == "transaction"
    assert request in list(_ancestors(write, by_id))

    # The relay, in a process of its own, linked its send span to that write.
    relay_spans = _spans(receiver, "e2e-relay")
    (send,) = [
        s for s in relay_spans if s.name == f"send {started}" and s.links
    ]  # one event of that type
    assert [link.span_id for link in send.links] == [write.span_id]
    assert [link.trace_id for link in send.links] == [trace_id]
    assert send.trace_id != trace_id  # a batch is a trace of its own

    # The handler's write, the relay's second send and the second handler: same trace.
    (watcher_span,) = _process(wis2l_telemetry, "e2e-watcher")
    assert _bytes(watcher_span.context.trace_id, 16) == trace_id
    assert watcher_span.parent is not None
    (second_write,) = [
        s for s in wis2l_telemetry.spans if s.context.span_id == watcher_span.parent.span_id
    ]
    assert second_write.name == "transaction"
    assert second_write.parent is not None
    assert second_write.parent.span_id == builder_span.context.span_id
    (second_send,) = [s for s in relay_spans if s.name == f"send {updated}"]
    assert [link.span_id for link in second_send.links] == [_bytes(second_write.context.span_id, 8)]
    assert os.environ.get("OTEL_SERVICE_NAME") != "e2e-api"  # nothing leaked into this process
