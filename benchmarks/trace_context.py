"""What one trace through the outbox costs: relay throughput and bytes per event.

``python -m benchmarks.trace_context [--quick]`` (or the ``run`` group of the suite).

Relay throughput: the runtime's relay is paused, ``count`` committed event rows are
written, and a fresh :class:`OutboxRelay` drains them with ``relay_once()`` passes (as
``outbox_cases.throughput`` does). Three kinds of run alternate, each the median of
``repeats``:

- *without context*: rows with ``trace_context`` NULL, no SDK in the process (today's
  relay);
- *with context*: every row keeps a writer's context (a ``traceparent``, the usual case),
  still no SDK in the relay's process: it sends it as two headers (``traceparent``,
  ``ce-traceparent``);
- *with context and tracestate*: a two-member ``tracestate`` too (four headers);
- *with context and an SDK*: ``traceparent`` rows, with an OpenTelemetry SDK recording every
  span (a ``send`` span per batch, a ``send <subject>`` span per message linked to the
  writer's context, the messaging metrics) into a batch processor whose exporter drops
  them; and the same SDK sampling 1% of traces (``ParentBased(TraceIdRatioBased(0.01))``:
  an unsampled batch's message spans are not recorded; the metrics still are).

Bytes: the on-disk size of the column (``pg_column_size``) of a row with a context, and
the header bytes the context adds to a NATS message (``traceparent``, ``ce-traceparent``
and, with a tracestate, ``tracestate`` and ``ce-tracestate``, as ``name: value\\r\\n``).

Writer cost: ``event_params`` (the outbox row of a write) with no SDK, and with an SDK and
a span active (it formats the context), in nanoseconds per call.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from benchmarks.env import Env, run_env, servers_and_database
from benchmarks.harness import Config, Result, Target
from benchmarks.report import table
from wis2l_core.db.repository import event_params
from wis2l_core.db.sql import query_file
from wis2l_core.events import BuildProgress
from wis2l_core.events.cloudevents import cloudevent_headers
from wis2l_core.events.outbox import OutboxRelay
from wis2l_core.telemetry import configure

__all__ = ["run"]

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
STATE = "vendor=opaque1,other=b"
CONTEXT = f"{PARENT},{STATE}"
"""The context every "with context" row keeps (a tracestate of two members)."""


class _Drop(SpanExporter):
    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


async def _write_backlog(env: Env, count: int, context: str | None) -> None:
    text = query_file("events")["insert_outbox"].text
    pid = env.project_id
    params = []
    for i in range(count):
        row = event_params(BuildProgress(project_id=pid, build_id=pid, progress=i % 101))
        row["trace_context"] = context
        params.append(row)
    async with env.wis.database.connection() as conn, conn.transaction(), conn.cursor() as cur:
        await cur.executemany(text, params)


async def _drain(env: Env, count: int, context: str | None) -> float:
    await _write_backlog(env, count, context)
    relay = OutboxRelay(env.settings, env.wis.database, env.wis.bus)
    start = time.perf_counter()
    done = 0
    while done < count:
        done += await relay.relay_once()
    return count / (time.perf_counter() - start)


async def _with_sdk(env: Env, count: int, *, ratio: float = 1.0) -> float:
    sampler = ParentBased(TraceIdRatioBased(ratio))
    tracer_provider = TracerProvider(sampler=sampler)
    tracer_provider.add_span_processor(BatchSpanProcessor(_Drop(), max_queue_size=20_000))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    configure(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        return await _drain(env, count, PARENT)
    finally:
        configure()
        tracer_provider.shutdown()
        meter_provider.shutdown()


async def throughput(env: Env, config: Config) -> Result:
    """Relay events/s with and without a stored context (and with an SDK recording)."""
    res = Result("outbox relay throughput, trace context")
    count = 500 if config.quick else 10_000
    repeats = 1 if config.quick else 7
    await env.wis.relay.stop(5)
    contexts = {"without": None, "with": PARENT, "state": CONTEXT}
    kinds = ["without", "with", "state", "sdk", "sampled"]
    runs: dict[str, list[float]] = {k: [] for k in kinds}
    try:
        for i in range(repeats):
            for kind in kinds[i % 5 :] + kinds[: i % 5]:  # rotate which kind goes first
                if kind == "sdk":
                    runs[kind].append(await _with_sdk(env, count))
                elif kind == "sampled":
                    runs[kind].append(await _with_sdk(env, count, ratio=0.01))
                else:
                    runs[kind].append(await _drain(env, count, contexts[kind]))
    finally:
        await env.wis.relay.start()
    without, with_, state, sdk, sampled = (statistics.median(runs[k]) for k in kinds)
    res.values |= {
        "events/s without context": without,
        "events/s with context (no SDK)": with_,
        "events/s with context and tracestate (no SDK)": state,
        "events/s with context, SDK recording every span": sdk,
        "events/s with context, SDK sampling 1% of batches": sampled,
    }
    res.ratios["with context / without (throughput)"] = with_ / without
    res.ratios["with context and tracestate / without (throughput)"] = state / without
    res.ratios["SDK recording / without (throughput)"] = sdk / without
    res.ratios["SDK sampling 1% / without (throughput)"] = sampled / without
    res.targets.append(
        Target(
            "relay with context, share of without",
            with_ / without,
            0.95,
            ">=",
            ratio="with context / without (throughput)",
        )
    )
    res.notes = (
        f"{count} committed rows drained by relay_once() passes, median of {repeats},"
        " kinds alternating; context = a traceparent (and a two-member tracestate); SDK:"
        " batch processor, dropping exporter, in-memory metric reader"
    )
    return res


async def sizes(env: Env, config: Config) -> Result:
    """Bytes a context adds: to an events row, and to a NATS message's headers."""
    res = Result("trace context bytes")
    async with env.wis.database.connection() as conn:
        cur = await conn.execute(
            "SELECT pg_column_size(%s::text) AS full, pg_column_size(%s::text) AS parent",
            (CONTEXT, PARENT),
        )
        row = await cur.fetchone()
    assert row is not None

    def header_bytes(headers: dict[str, str]) -> int:
        return sum(len(f"{k}: {v}\r\n".encode()) for k, v in headers.items())

    base = cloudevent_headers("build.progress", "0" * 36, namespace="ns", time="t")
    full = cloudevent_headers("build.progress", "0" * 36, namespace="ns", time="t", trace=CONTEXT)
    parent = cloudevent_headers("build.progress", "0" * 36, namespace="ns", time="t", trace=PARENT)
    res.values |= {
        "row bytes, traceparent only": row["parent"],
        "row bytes, with a tracestate": row["full"],
        "row bytes, no context (NULL)": 0,
        "message header bytes added, traceparent only": header_bytes(parent) - header_bytes(base),
        "message header bytes added, with a tracestate": header_bytes(full) - header_bytes(base),
        "message header bytes without context": header_bytes(base),
    }
    res.notes = (
        "pg_column_size of the stored text (a NULL takes a bit in the row's null bitmap);"
        f" header bytes as 'name: value\\r\\n' on the wire; tracestate {STATE!r}"
    )
    return res


def _per_call(n: int) -> float:
    pid = uuid.uuid4()
    event = BuildProgress(project_id=pid, build_id=pid, progress=1)
    start = time.perf_counter_ns()
    for _ in range(n):
        event_params(event)
    return (time.perf_counter_ns() - start) / n


async def writer(env: Env, config: Config) -> Result:
    """``event_params`` per call: no SDK, vs an SDK with a span active."""
    res = Result("event_params, trace context")
    n = 2000 if config.quick else 50_000
    provider = TracerProvider()
    none, traced = [], []
    for _ in range(3 if config.quick else 7):
        none.append(_per_call(n))
        configure(tracer_provider=provider)
        try:
            with provider.get_tracer("bench").start_as_current_span("request"):
                traced.append(_per_call(n))
        finally:
            configure()
    provider.shutdown()
    res.values |= {
        "ns/call, no SDK": statistics.median(none),
        "ns/call, SDK and a span": statistics.median(traced),
    }
    res.ratios["SDK and a span / no SDK (event_params)"] = statistics.median(
        traced
    ) / statistics.median(none)
    res.notes = f"{n} calls per sample, median of the samples, alternating"
    return res


async def run(env: Env, config: Config) -> list[Result]:
    """The trace-context cases."""
    return [await throughput(env, config), await sizes(env, config), await writer(env, config)]


def main(argv: list[str] | None = None) -> int:
    """Run the cases on the test servers (or an embedded stack) and print them."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.trace_context")
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args(argv)
    config = Config(rounds=2, scale=0.02, quick=True) if args.quick else Config()

    async def go(servers: Any, url: str) -> list[Result]:
        async with run_env(servers, url) as env:
            return await run(env, config)

    with servers_and_database() as (servers, url):
        results = asyncio.run(go(servers, url))
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
