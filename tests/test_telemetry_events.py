"""One trace through the outbox, NATS spans and messaging metrics (real PostgreSQL/NATS).

A repository write inside a span keeps that span's context with its event row; the relay
sends it as ``traceparent``/``ce-traceparent``; a subscriber's ``process`` span is a child
of it, and what the handler writes carries the same trace again.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from tests.helpers import eventually, make_project
from tests.test_events_bus import read_all
from tests.test_events_outbox import PrivateNats, _env, _free_port

from wis2l_core import Settings, Wis2l
from wis2l_core.db.locks import OUTBOX
from wis2l_core.errors import ServiceUnavailable
from wis2l_core.events import BuildProgress, BuildStarted, ComponentCreated, EventBus
from wis2l_core.models import Language
from wis2l_core.telemetry import _messaging
from wis2l_core.testing.plugin import drop_stream
from wis2l_core.testing.servers import Servers
from wis2l_core.testing.telemetry import Captured

FAST = (0.05,)
WORKER = Path(__file__).with_name("outbox_relay_worker.py")


def _traceparent(span: trace.Span | ReadableSpan) -> str:
    ctx = span.get_span_context()
    assert ctx is not None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


def _process_spans(cap: Captured, durable: str) -> list[ReadableSpan]:
    return [
        s
        for s in cap.spans
        if s.name.startswith("process ")
        and (s.attributes or {}).get("messaging.consumer.group.name") == durable
    ]


def _writer(cap: Captured, stored: str | None, parent: trace.Span | ReadableSpan) -> ReadableSpan:
    """The span ``stored`` (an event row's context) names: the write's ``transaction``
    span, a child of ``parent`` (the span that was current when the repository wrote)."""
    assert stored is not None
    span_id = int(stored.split(",")[0].split("-")[2], 16)
    (found,) = [s for s in cap.spans if s.context.span_id == span_id]
    assert found.name == "transaction"
    assert found.parent is not None
    assert found.parent.span_id == parent.get_span_context().span_id
    assert stored.split(",")[0] == _traceparent(found)
    return found


async def _contexts(wis: Wis2l, type_: str) -> list[str | None]:
    async with wis.database.connection() as conn:
        cur = await conn.execute(
            "SELECT trace_context FROM events WHERE type = %s ORDER BY seq", (type_,)
        )
        return [r["trace_context"] for r in await cur.fetchall()]


async def _component(wis: Wis2l, project: uuid.UUID, name: str = "Player") -> None:
    await wis.components.create(project_id=project, name=name, language=Language.GDSCRIPT, code="")


# -- one trace ---------------------------------------------------------------------------


async def test_a_write_its_relay_its_handler_and_their_writes_are_one_trace(
    wis2l_telemetry: Captured, wis: Wis2l
) -> None:
    started: list[BuildStarted] = []

    @wis.bus.subscribe(ComponentCreated, durable="builder", backoff=FAST)
    async def build_it(event: ComponentCreated) -> None:  # writes an event in turn
        build = await wis.builds.create(project_id=event.project_id, target="webgl")
        await wis.builds.update(build.id, status="building")

    @wis.bus.subscribe(BuildStarted, durable="watcher", backoff=FAST)
    async def watch(event: BuildStarted) -> None:
        started.append(event)

    project = await make_project(wis)
    with wis2l_telemetry.tracer().start_as_current_span("POST /components") as request:
        await _component(wis, project)
    await eventually(lambda: len(started) == 1, timeout=15)
    trace_id = request.get_span_context().trace_id

    # The row kept the context of its write (the transaction span inside the request);
    # the handler's write kept one inside the process span.
    (stored,) = await _contexts(wis, "component.created")
    writer = _writer(wis2l_telemetry, stored, request)
    (builder,) = _process_spans(wis2l_telemetry, "builder")
    (second,) = await _contexts(wis, "build.started")
    second_writer = _writer(wis2l_telemetry, second, builder)

    # The subscriber continued the request's trace: its parent is the writer's span.
    assert builder.context.trace_id == trace_id
    assert builder.parent is not None
    assert builder.parent.span_id == writer.context.span_id
    assert builder.kind is SpanKind.CONSUMER
    attrs = dict(builder.attributes or {})
    subject = wis.bus.subject(ComponentCreated)
    assert builder.name == f"process {subject}"
    assert attrs["messaging.system"] == "nats"
    assert attrs["messaging.operation.type"] == "process"
    assert attrs["messaging.destination.name"] == subject
    assert attrs["messaging.consumer.group.name"] == "builder"
    assert attrs["messaging.destination.subscription.name"] == "builder-component-created"
    assert attrs["messaging.nats.message.delivery_count"] == 1
    component_event = (await wis.events.find_by_project_id(project)).items
    ids = {str(e.id) for e in component_event if e.type == "component.created"}
    assert attrs["messaging.message.id"] in ids

    # ... and the second hop too: the watcher's span is the child of the builder's write.
    await eventually(lambda: len(_process_spans(wis2l_telemetry, "watcher")) == 1)
    (watcher,) = _process_spans(wis2l_telemetry, "watcher")
    assert watcher.context.trace_id == trace_id
    assert watcher.parent is not None
    assert watcher.parent.span_id == second_writer.context.span_id

    # The relay's send span is a trace of its own, linked to the writer's span.
    send = [
        s
        for s in wis2l_telemetry.named(f"send {subject}")
        if (s.attributes or {}).get("messaging.message.id") in ids
    ]
    assert len(send) == 1
    assert send[0].kind is SpanKind.PRODUCER
    assert send[0].context.trace_id != trace_id
    assert [link.context.span_id for link in send[0].links] == [writer.context.span_id]
    assert (send[0].attributes or {})["messaging.operation.type"] == "send"
    assert send[0].parent is not None  # the batch's "send" span
    batch = [
        s for s in wis2l_telemetry.named("send") if s.context.span_id == send[0].parent.span_id
    ]
    assert batch
    assert (batch[0].attributes or {})["messaging.batch.message_count"] >= 1

    # The message on the stream carries the writer's context in both header forms.
    (msg,) = [
        m for m in await read_all(wis.bus, subject) if (m.headers or {}).get("Nats-Msg-Id") in ids
    ]
    headers = msg.headers or {}
    assert headers["traceparent"] == _traceparent(writer)
    assert headers["ce-traceparent"] == _traceparent(writer)
    assert "tracestate" not in headers


async def test_tracestate_is_kept_and_sent(wis2l_telemetry: Captured, wis: Wis2l) -> None:
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

    remote = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(1),
        trace_state=TraceState([("vendor", "opaque1"), ("other", "b")]),
    )
    project = await make_project(wis)
    ctx = trace.set_span_in_context(NonRecordingSpan(remote))
    with wis2l_telemetry.tracer().start_as_current_span("handler", context=ctx) as span:
        await _component(wis, project)
    (stored,) = await _contexts(wis, "component.created")
    writer = _writer(wis2l_telemetry, stored, span)
    assert stored == f"{_traceparent(writer)},vendor=opaque1,other=b"
    subject = wis.bus.subject(ComponentCreated)

    async def sent() -> bool:
        return bool(await read_all(wis.bus, subject, wait=0.2))

    await eventually(sent)
    (msg,) = await read_all(wis.bus, subject)
    assert (msg.headers or {})["tracestate"] == "vendor=opaque1,other=b"
    assert (msg.headers or {})["ce-tracestate"] == "vendor=opaque1,other=b"
    assert (msg.headers or {})["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")


async def test_without_an_sdk_nothing_is_stored_or_sent(wis: Wis2l) -> None:
    assert _messaging.current_context() is None
    project = await make_project(wis)
    tracer = trace.get_tracer("tests")  # the API's no-op tracer: no SDK is set
    with tracer.start_as_current_span("request"):
        await _component(wis, project)
    assert await _contexts(wis, "component.created") == [None]
    subject = wis.bus.subject(ComponentCreated)

    async def sent() -> bool:
        return bool(await read_all(wis.bus, subject, wait=0.2))

    await eventually(sent)
    (msg,) = await read_all(wis.bus, subject)
    headers = msg.headers or {}
    assert not {"traceparent", "tracestate", "ce-traceparent"} & set(headers)
    assert headers["ce-id"] == headers["Nats-Msg-Id"]  # the message is otherwise as before


async def test_a_relay_started_later_sends_the_context_kept_while_it_was_away(
    wis2l_telemetry: Captured, wis: Wis2l
) -> None:
    """The context waits with the row (NATS down, relay stopped or another process's)."""
    await wis.relay.stop(5)
    seen: list[str] = []

    @wis.bus.subscribe(ComponentCreated, durable="late", backoff=FAST)
    async def handle(event: ComponentCreated) -> None:
        seen.append(format(trace.get_current_span().get_span_context().trace_id, "032x"))

    project = await make_project(wis)
    with wis2l_telemetry.tracer().start_as_current_span("request") as request:
        await _component(wis, project)
    await asyncio.sleep(0.3)
    assert seen == []  # waiting in the outbox
    await wis.relay.start()
    await eventually(lambda: len(seen) == 1)
    assert seen == [format(request.get_span_context().trace_id, "032x")]


async def test_a_relay_in_another_process_without_an_sdk_sends_the_writers_context(
    wis2l_telemetry: Captured, wis: Wis2l, tmp_path: Path
) -> None:
    await wis.relay.stop(5)
    seen: list[int] = []

    @wis.bus.subscribe(ComponentCreated, durable="remote", backoff=FAST)
    async def handle(event: ComponentCreated) -> None:
        seen.append(trace.get_current_span().get_span_context().trace_id)

    s = wis.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_"))}
    env |= {
        "DATABASE_URL": s.database_url,
        "REDIS_URL": s.redis_url,
        "NATS_URL": ",".join(s.nats_urls),
        "WIS2L_NAMESPACE": s.namespace,
        "WIS2L_STREAM": s.stream_name,
        "WIS2L_ENV": "development",
        "OTEL_SDK_DISABLED": "true",
    }
    status = tmp_path / "relay.json"
    with (tmp_path / "relay.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), str(status), "2", "0.2", "0"],
            env=env,
            stdout=log,
            stderr=log,
        )
        try:
            project = await make_project(wis)
            with wis2l_telemetry.tracer().start_as_current_span("request") as request:
                await _component(wis, project)
            await eventually(lambda: len(seen) == 1, timeout=20)
        finally:
            proc.terminate()
            proc.wait(10)
    assert seen == [request.get_span_context().trace_id]


@pytest.mark.disruptive
@pytest.mark.slow
async def test_nats_down_the_event_waits_with_its_context_then_continues_the_trace(
    wis2l_telemetry: Captured, wis2l_settings: Settings, tmp_path: Path
) -> None:
    server = PrivateNats(_free_port(), tmp_path / "js")
    server.start()
    settings = attrs.evolve(wis2l_settings, nats_urls=(server.url,))
    try:
        async with _env(settings) as env:
            seen: list[int] = []

            @env.bus.subscribe(ComponentCreated, durable="outage", backoff=FAST)
            async def handle(event: ComponentCreated) -> None:
                seen.append(trace.get_current_span().get_span_context().trace_id)

            await env.bus.start_subscribers()
            await env.relay().start()
            project = await env.project()
            server.stop()
            await eventually(lambda: not env.bus.connected)
            with wis2l_telemetry.tracer().start_as_current_span("request") as request:
                await env.repos.components.create(
                    project_id=project, name="P", language=Language.GDSCRIPT, code=""
                )
            await asyncio.sleep(0.5)
            assert seen == []
            server.start()
            await eventually(lambda: len(seen) == 1, timeout=30)
            assert seen == [request.get_span_context().trace_id]
    finally:
        server.stop()


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_postgresql_killed_the_kept_context_survives_its_crash_recovery(
    wis2l_telemetry: Captured, wis2l_servers: Servers
) -> None:
    """The primary SIGKILLed with the event unpublished: after crash recovery the relay
    sends the context the row kept, and the handler continues the request's trace."""
    from tests.clusters.postgres import PgCluster

    with PgCluster() as cluster:
        primary = cluster.start_primary()
        tag = uuid.uuid4().hex[:10]
        settings = Settings(
            database_url=primary.url("wis2l"),
            redis_url=wis2l_servers.redis_url,
            nats_urls=(wis2l_servers.nats_url,),
            namespace=f"t{tag}",
            stream_name=f"T{tag.upper()}",
            db_connect_timeout=2.0,
        )
        assert await Wis2l(settings).migrate()
        try:
            async with Wis2l(settings) as wis:
                seen: list[trace.SpanContext] = []

                @wis.bus.subscribe(ComponentCreated, durable="crash", backoff=FAST)
                async def handle(event: ComponentCreated) -> None:
                    seen.append(trace.get_current_span().get_span_context())

                await wis.relay.stop()  # the event waits in the outbox through the crash
                project = await make_project(wis)
                with wis2l_telemetry.tracer().start_as_current_span("request") as request:
                    await _component(wis, project)
                (stored,) = await _contexts(wis, "component.created")
                writer = _writer(wis2l_telemetry, stored, request)
                await asyncio.to_thread(cluster.kill, primary)
                await asyncio.to_thread(cluster.restart, primary)
                assert await _contexts_after_restart(wis, "component.created") == [stored]
                await wis.relay.start()
                await eventually(lambda: len(seen) == 1, timeout=30)
        finally:
            await drop_stream(settings)
    assert seen[0].trace_id == request.get_span_context().trace_id
    (process,) = _process_spans(wis2l_telemetry, "crash")
    assert process.parent is not None
    assert process.parent.span_id == writer.context.span_id


async def _contexts_after_restart(wis: Wis2l, type_: str) -> list[str | None]:
    """:func:`_contexts`, once the pool has found the restarted server again."""
    for _ in range(100):
        try:
            return await _contexts(wis, type_)
        except ServiceUnavailable:
            await asyncio.sleep(0.1)
    return await _contexts(wis, type_)


# -- bus.publish and dead letters ------------------------------------------------------


async def test_bus_publish_sends_the_current_context(
    wis2l_telemetry: Captured, bus: EventBus
) -> None:
    seen: list[BuildProgress] = []

    @bus.subscribe(BuildProgress, durable="direct", backoff=FAST)
    async def handle(event: BuildProgress) -> None:
        seen.append(event)

    await bus.start_subscribers()
    p = uuid.uuid4()
    with wis2l_telemetry.tracer().start_as_current_span("job") as job:
        await bus.publish(BuildProgress(project_id=p, build_id=p, progress=3))
    await eventually(lambda: len(seen) == 1)
    subject = bus.subject(BuildProgress)
    send = wis2l_telemetry.span(f"send {subject}")
    assert send.kind is SpanKind.PRODUCER
    assert send.context.trace_id == job.get_span_context().trace_id
    assert send.parent is not None
    assert send.parent.span_id == job.get_span_context().span_id
    assert (send.attributes or {})["messaging.message.id"] == str(seen[0].id)
    await eventually(lambda: len(_process_spans(wis2l_telemetry, "direct")) == 1)
    (process,) = _process_spans(wis2l_telemetry, "direct")
    assert process.parent is not None
    assert process.parent.span_id == send.context.span_id
    (msg,) = await read_all(bus, subject)
    assert (msg.headers or {})["traceparent"] == _traceparent(send)
    assert (msg.headers or {})["ce-traceparent"] == _traceparent(send)


async def test_a_dead_lettered_message_keeps_its_trace(
    wis2l_telemetry: Captured, bus: EventBus
) -> None:
    @bus.subscribe(BuildProgress, durable="doomed", max_deliver=2, backoff=FAST)
    async def handle(event: BuildProgress) -> None:
        raise ValueError("no")

    await bus.start_subscribers()
    p = uuid.uuid4()
    with wis2l_telemetry.tracer().start_as_current_span("job"):
        await bus.publish(BuildProgress(project_id=p, build_id=p, progress=3))
    dlq = bus.dlq_subject(bus.subject(BuildProgress))

    async def dead() -> bool:
        return bool(await read_all(bus, dlq, wait=0.2))

    await eventually(dead)
    send = wis2l_telemetry.span(f"send {bus.subject(BuildProgress)}")
    (copy,) = await read_all(bus, dlq)
    assert (copy.headers or {})["traceparent"] == _traceparent(send)
    assert (copy.headers or {})["ce-traceparent"] == _traceparent(send)
    await eventually(lambda: len(_process_spans(wis2l_telemetry, "doomed")) == 2)
    first, last = _process_spans(wis2l_telemetry, "doomed")
    for span in (first, last):
        assert span.context.trace_id == send.context.trace_id
        assert span.status.status_code is StatusCode.ERROR
        assert (span.attributes or {})["error.type"] == "ValueError"
    assert [
        (s.attributes or {})["messaging.nats.message.delivery_count"] for s in (first, last)
    ] == [
        1,
        2,
    ]
    assert [e.name for e in first.events] == []
    (event,) = last.events
    assert event.name == "wis2l.dead_lettered"
    assert (event.attributes or {})["wis2l.dlq.reason"] == "handler"
    assert (event.attributes or {})["wis2l.dlq.subject"] == dlq
    (point,) = wis2l_telemetry.points("wis2l.events.dead_lettered")
    assert point.value == 1
    assert point.attributes["messaging.consumer.group.name"] == "doomed"
    failed = [
        pt
        for pt in wis2l_telemetry.points("messaging.process.duration")
        if pt.attributes.get("error.type") == "ValueError"
    ]
    assert failed
    assert failed[0].count == 2


# -- metrics -----------------------------------------------------------------------------


@pytest.fixture
async def held_partitions(wis: Wis2l) -> AsyncIterator[Any]:
    """A session holding every outbox partition's advisory lock: no relay publishes."""
    url = wis.settings.database_url
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    parts = list(range(wis.settings.outbox_partitions))
    await conn.execute(
        "SELECT pg_advisory_lock(%s::int, p) FROM unnest(%s::int[]) p", (OUTBOX, parts)
    )
    yield conn
    await conn.close()


async def test_the_messaging_and_outbox_metrics(
    wis2l_telemetry: Captured, wis: Wis2l, held_partitions: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_messaging, "GAUGE_REFRESH", 0.2)  # 5 s between reads otherwise
    got: list[ComponentCreated] = []

    @wis.bus.subscribe(ComponentCreated, durable="counted", backoff=FAST)
    async def handle(event: ComponentCreated) -> None:
        got.append(event)

    project = await make_project(wis)
    for name in ("A", "B", "C"):
        await _component(wis, project, name)

    def gauge(name: str) -> dict[int, float]:
        return {
            int(pt.attributes["wis2l.outbox.partition"]): pt.value
            for pt in wis2l_telemetry.points(name)
        }

    # The relay cannot take a partition: the gauges see the backlog (after a refresh).
    await eventually(lambda: sum(gauge("wis2l.outbox.backlog").values()) >= 3, timeout=10)
    backlog = gauge("wis2l.outbox.backlog")
    assert len(backlog) == wis.settings.outbox_partitions
    assert max(gauge("wis2l.outbox.lag").values()) > 0
    for pt in wis2l_telemetry.points("wis2l.outbox.backlog"):
        assert pt.attributes["db.namespace"]  # the database's name

    await held_partitions.execute("SELECT pg_advisory_unlock_all()")
    await eventually(lambda: len(got) == 3, timeout=15)
    subject = wis.bus.subject(ComponentCreated)

    def total(metric: str, **want: Any) -> float:
        points = wis2l_telemetry.points(metric)
        matching = [p for p in points if all(p.attributes.get(k) == v for k, v in want.items())]
        return sum(getattr(p, "count", None) or getattr(p, "value", 0) for p in matching)

    # Marked after the acks: possibly after the handlers ran.
    await eventually(lambda: total("wis2l.outbox.published") >= 3)
    assert total("wis2l.outbox.publish_latency") >= 3
    (latency,) = wis2l_telemetry.points("wis2l.outbox.publish_latency")
    assert latency.max >= 0.1  # they waited behind the held partitions
    assert total("messaging.client.sent.messages", **{"messaging.destination.name": subject}) >= 3
    assert (
        total(
            "messaging.client.operation.duration",
            **{"messaging.destination.name": subject, "messaging.operation.type": "send"},
        )
        >= 3
    )
    process = {"messaging.consumer.group.name": "counted", "messaging.system": "nats"}
    await eventually(lambda: total("messaging.process.duration", **process) == 3)
    consumed = {"messaging.destination.subscription.name": "counted-component-created"}
    assert total("messaging.client.consumed.messages", **consumed) == 3

    # Drained: the backlog goes back to 0 at the next refresh.
    await eventually(lambda: sum(gauge("wis2l.outbox.backlog").values()) == 0, timeout=10)


def test_the_asyncapi_document_names_the_trace_headers() -> None:
    from wis2l_core.events import asyncapi_document

    schemas = asyncapi_document("ns")["components"]["schemas"]
    for name in ("EventHeaders", "DeadLetterHeaders"):
        assert set(_messaging.TRACE_HEADERS) <= set(schemas[name]["properties"]), name
        assert not set(_messaging.TRACE_HEADERS) & set(schemas[name]["required"]), name


def test_the_kept_context_fits_its_column(wis2l_telemetry: Captured) -> None:
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

    def context_with(state: TraceState) -> str | None:
        remote = SpanContext(1, 2, is_remote=True, trace_flags=TraceFlags(1), trace_state=state)
        with trace.use_span(NonRecordingSpan(remote)):
            return _messaging.current_context()

    short = context_with(TraceState([("a", "1")]))
    assert short == "00-00000000000000000000000000000001-0000000000000002-01,a=1"
    members = [(f"k{i}", "v" * 200) for i in range(3)]  # 614 characters of tracestate
    assert context_with(TraceState(members)) == short.split(",")[0]  # dropped, not cut
    assert context_with(TraceState()) == short.split(",")[0]


def test_a_message_context_is_read_in_any_header_case(wis2l_telemetry: Captured) -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    for headers in ({"Traceparent": parent}, {"ce-traceparent": parent}):
        ctx = trace.get_current_span(_messaging._extract(headers)).get_span_context()
        assert ctx.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    garbage = _messaging._extract({"traceparent": "garbage"})
    assert not trace.get_current_span(garbage).get_span_context().is_valid
    assert _messaging._link("garbage") is None
    assert _messaging._link(parent + ",a=1").context.span_id == 0xB7AD6B7169203331
