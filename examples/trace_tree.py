"""One whole trace, printed as a tree: no tracing backend to install.

An API request starts a build (``POST /builds/{id}/start``): the repository write records
``BuildStarted`` in the outbox in the same transaction, the relay publishes it, a
subscriber reacts by writing progress (a second event, ``BuildProgress``), and a second
subscriber shows that progress. With an OpenTelemetry SDK set, wis2l-core traces each
step and carries the request's trace through the outbox row and the NATS message, so
they are all one trace. This script keeps the spans in memory (the SDK's
``InMemorySpanExporter``) and prints them by parent, and by link for the relay's send
(which links to the write that recorded the event: the relay batches events of many
requests).

Run it with no set-up at all (an embedded stack is started), or set DATABASE_URL /
REDIS_URL / NATS_URL to use your servers::

    pip install "wis2l-core[telemetry]" opentelemetry-sdk
    python examples/trace_tree.py

To send the same spans to Jaeger, Tempo or any OTLP endpoint instead, see
docs/observability.md.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence

from _common import runtime
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from wis2l_core import BuildStatus, Engine
from wis2l_core.events import BuildProgress, BuildStarted

SHOWN_ATTRIBUTES = (
    "http.route",
    "db.query.summary",
    "db.system.name",
    "messaging.destination.name",
    "messaging.operation.type",
    "messaging.consumer.group.name",
    "error.type",
)


def setup_tracing() -> InMemorySpanExporter:
    """An SDK keeping every finished span in memory, set as OpenTelemetry's global one."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "trace-tree"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # wis2l-core records through the global provider
    return exporter


def one_trace(spans: Sequence[ReadableSpan], root: ReadableSpan) -> list[ReadableSpan]:
    """The spans of ``root``'s trace, and the spans linked to them (in their own traces,
    as a relay's send span may be), with their descendants."""
    assert root.context is not None
    chosen = {
        s.context.span_id: s
        for s in spans
        if s.context and s.context.trace_id == root.context.trace_id
    }
    grew = True
    while grew:
        grew = False
        for span in spans:
            if span.context is None or span.context.span_id in chosen:
                continue
            linked = any(link.context.span_id in chosen for link in span.links)
            parent_in = span.parent is not None and span.parent.span_id in chosen
            if linked or parent_in:
                chosen[span.context.span_id] = span
                grew = True
    return sorted(chosen.values(), key=lambda s: s.start_time or 0)


def tree_lines(spans: Sequence[ReadableSpan]) -> list[str]:
    """The spans as an indented tree: children under their parent, linked spans (``~>``)
    under the span they link to when their own parent is not among ``spans``."""
    ids = {s.context.span_id for s in spans if s.context is not None}
    children: dict[int | None, list[tuple[ReadableSpan, bool]]] = {}
    for span in spans:
        if span.parent is not None and span.parent.span_id in ids:
            children.setdefault(span.parent.span_id, []).append((span, False))
        elif (link := next((k for k in span.links if k.context.span_id in ids), None)) is not None:
            children.setdefault(link.context.span_id, []).append((span, True))
        else:
            children.setdefault(None, []).append((span, False))
    lines: list[str] = []

    def walk(items: Iterable[tuple[ReadableSpan, bool]], prefix: str, top: bool) -> None:
        items = list(items)
        for i, (span, linked) in enumerate(items):
            last = i == len(items) - 1
            branch = "" if top else ("└─ " if last else "├─ ")
            lines.append(prefix + branch + ("~> " if linked else "") + describe(span))
            below = prefix if top else prefix + ("   " if last else "│  ")
            assert span.context is not None
            walk(children.get(span.context.span_id, []), below, top=False)

    walk(children.get(None, []), "", top=True)
    return lines


def describe(span: ReadableSpan) -> str:
    """``name  KIND  1.2 ms  key=value ...``: the span in one line."""
    took = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
    attributes = span.attributes or {}
    shown = " ".join(f"{k}={attributes[k]!s}" for k in SHOWN_ATTRIBUTES if k in attributes)
    status = "  ERROR" if span.status.status_code.name == "ERROR" else ""
    return f"{span.name}  {span.kind.name}  {took:.1f} ms{status}  {shown}".rstrip()


async def settled(exporter: InMemorySpanExporter, quiet: float = 0.3, limit: float = 5.0) -> None:
    """Wait until no span has finished for ``quiet`` seconds (handlers end after their
    acknowledgement), at most ``limit`` seconds."""
    deadline = time.monotonic() + limit
    count = -1
    while time.monotonic() < deadline:
        now = len(exporter.get_finished_spans())
        if now == count:
            return
        count = now
        await asyncio.sleep(quiet)


async def main() -> None:
    exporter = setup_tracing()
    tracer = trace.get_tracer("trace_tree example")
    async with runtime(quiet=True) as wis:
        stamp = int(time.time() * 1000)
        user = await wis.users.create(
            email=f"trace-{stamp}@example.com", name="Tess", subject=f"nocturna|tess-{stamp}"
        )
        project = await wis.projects.create(
            owner_id=user.id, name="Trace Racer", slug=f"trace-racer-{stamp}", engine=Engine.GODOT
        )
        build = await wis.builds.create(project_id=project.id, target="webgl")
        shown: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        @wis.bus.subscribe(BuildStarted, durable="trace-tree-worker")
        async def start_work(event: BuildStarted) -> None:
            if event.build_id == build.id:  # the worker reports progress: a second event
                await wis.builds.update(event.build_id, progress=10)

        @wis.bus.subscribe(BuildProgress, durable="trace-tree-progress")
        async def show_progress(event: BuildProgress) -> None:
            if event.build_id == build.id and not shown.done():
                shown.set_result(event.progress)

        exporter.clear()  # the set-up above is not part of the request
        # What an ASGI instrumentation (opentelemetry-instrumentation-asgi) makes per request.
        with tracer.start_as_current_span(
            "POST /builds/{build_id}/start",
            kind=SpanKind.SERVER,
            attributes={"http.request.method": "POST", "http.route": "/builds/{build_id}/start"},
        ) as request:
            await wis.builds.update(build.id, status=BuildStatus.BUILDING)
        progress = await asyncio.wait_for(shown, timeout=30)
        await settled(exporter)

    spans = list(exporter.get_finished_spans())
    request_span = next(s for s in spans if s.context == request.get_span_context())
    whole = one_trace(spans, request_span)
    assert request_span.context is not None
    print(f"trace {request_span.context.trace_id:032x}: {len(whole)} spans")
    for line in tree_lines(whole):
        print(line)
    print(f"the subscriber saw progress {progress}%")


if __name__ == "__main__":
    asyncio.run(main())
