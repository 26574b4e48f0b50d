"""What PostgreSQL telemetry costs: ``users.find_by_id`` with and without an SDK.

All in one interleaved run:

- ``library (no SDK)``: a ``Database`` as shipped, no SDK set (the traced cursor takes its
  plain path) against ``library (plain cursor)``: a ``Database`` whose connections use
  psycopg's own cursor, i.e. the library before telemetry. Judged: within 2 %.
- ``library (SDK spans)`` and ``library (SDK spans+metrics)``: an SDK tracer provider
  recording every span (a ``SimpleSpanProcessor`` into memory) and, for the second, a
  meter provider too, against ``raw (pool) + otel-psycopg``: the same SELECT on a raw
  psycopg_pool pool whose connections ``opentelemetry-instrumentation-psycopg``
  instruments, into the same tracer provider, and ``raw (pool)`` uninstrumented. Judged:
  the library's added cost per query no higher than the instrumentation's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, nullcontext
from typing import Any
from unittest import mock

import psycopg
from psycopg.rows import DictRow
from psycopg_pool import AsyncConnectionPool

from benchmarks.db_cases import FIND_USER
from benchmarks.env import Env
from benchmarks.harness import Config, Op, Result, Target, measure
from wis2l_core.db import pool as pool_module
from wis2l_core.db.connect import connect_kwargs
from wis2l_core.db.pool import Database, configure_connection
from wis2l_core.db.users import UserRepository
from wis2l_core.telemetry import configure

__all__ = ["run"]

Conn = psycopg.AsyncConnection[DictRow]


def _plain_kwargs(settings: Any, **more: Any) -> dict[str, Any]:
    """The library's connection settings with psycopg's own cursor (no telemetry)."""
    return {**connect_kwargs(settings, **more), "cursor_factory": psycopg.AsyncCursor}


@asynccontextmanager
async def database(env: Env, *, plain: bool = False) -> AsyncIterator[Database]:
    """A ``Database`` of its own, as shipped, or as before telemetry (``plain``: psycopg's
    own cursor)."""
    db = Database(env.settings)
    with (
        mock.patch.object(pool_module, "connect_kwargs", _plain_kwargs) if plain else nullcontext()
    ):
        await db.open()
    try:
        yield db
    finally:
        await db.close()


@asynccontextmanager
async def raw_pool(
    env: Env, tracer_provider: Any = None
) -> AsyncIterator[AsyncConnectionPool[Conn]]:
    """A raw psycopg_pool pool (plain cursors), instrumented by otel-psycopg if given a
    tracer provider."""

    async def configure_raw(conn: Conn) -> None:
        await configure_connection(conn)
        if tracer_provider is not None:
            from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

            instrument: Any = PsycopgInstrumentor.instrument_connection  # typed for sync only
            instrument(conn, tracer_provider=tracer_provider)

    pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
        env.settings.database_url,
        kwargs=_plain_kwargs(env.settings),
        min_size=2,
        max_size=10,
        configure=configure_raw,
        open=False,
    )
    await pool.open(wait=True)
    try:
        yield pool
    finally:
        await pool.close()


@contextmanager
def sdk() -> Iterator[tuple[Any, Any, Any]]:
    """An SDK tracer provider recording every span into memory, and a meter provider."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    try:
        yield tracer_provider, meter_provider, exporter
    finally:
        configure()
        tracer_provider.shutdown()
        meter_provider.shutdown()


async def find_by_id(env: Env, config: Config) -> Result:
    """``users.find_by_id``: no SDK vs before telemetry; an SDK vs otel-psycopg."""
    res = Result("telemetry: users.find_by_id")
    user_id = env.user_id
    try:
        import opentelemetry.instrumentation.psycopg
        import opentelemetry.sdk  # noqa: F401
    except ImportError as exc:
        res.skipped = f"needs opentelemetry-sdk and opentelemetry-instrumentation-psycopg ({exc})"
        return res
    with sdk() as (tracer_provider, meter_provider, exporter):
        async with (
            database(env) as db,
            database(env, plain=True) as plain_db,
            raw_pool(env) as pool,
            raw_pool(env, tracer_provider) as traced_pool,
        ):
            plain_users = UserRepository(plain_db)
            users = UserRepository(db)  # not the runtime's: its relay shares that pool

            async def library() -> object:
                return await users.find_by_id(user_id)

            async def library_plain() -> object:
                return await plain_users.find_by_id(user_id)

            async def library_spans() -> object:
                configure(tracer_provider=tracer_provider)
                try:
                    return await users.find_by_id(user_id)
                finally:
                    configure()

            async def library_all() -> object:
                configure(tracer_provider=tracer_provider, meter_provider=meter_provider)
                try:
                    return await users.find_by_id(user_id)
                finally:
                    configure()

            async def raw() -> object:
                async with pool.connection() as c:
                    cur = await c.execute(FIND_USER, (user_id,), prepare=True)
                    return await cur.fetchone()

            async def raw_otel() -> object:
                async with traced_pool.connection() as c:
                    cur = await c.execute(FIND_USER, (user_id,), prepare=True)
                    return await cur.fetchone()

            ops: dict[str, Op] = {
                "library (no SDK)": library,
                "library (plain cursor)": library_plain,
                "library (SDK spans)": library_spans,
                "library (SDK spans+metrics)": library_all,
                "raw (pool)": raw,
                "raw (pool) + otel-psycopg": raw_otel,
            }
            res.ops = await measure(ops, iterations=config.n(300), config=config)
            spans = len(exporter.get_finished_spans())
    no_sdk = res.ratio("no SDK / plain cursor", "library (no SDK)", "library (plain cursor)")
    res.ratio("SDK spans / no SDK", "library (SDK spans)", "library (no SDK)")
    res.ratio("otel-psycopg / raw pool", "raw (pool) + otel-psycopg", "raw (pool)")
    med = {name: stats.median_ms * 1000 for name, stats in res.ops.items()}
    ours = med["library (SDK spans)"] - med["library (no SDK)"]
    ours_all = med["library (SDK spans+metrics)"] - med["library (no SDK)"]
    theirs = med["raw (pool) + otel-psycopg"] - med["raw (pool)"]
    res.values["library span cost (us)"] = ours
    res.values["library span+metric cost (us)"] = ours_all
    res.values["otel-psycopg span cost (us)"] = theirs
    res.values["spans recorded"] = spans
    res.ratios["span cost: library / otel-psycopg"] = ours / theirs if theirs > 0 else float("nan")
    res.targets.append(
        Target("no SDK vs before", no_sdk, 1.02, "<=", ratio="no SDK / plain cursor")
    )
    res.targets.append(
        Target(
            "span cost vs otel-psycopg",
            res.ratios["span cost: library / otel-psycopg"],
            1.0,
            "<=",
            ratio="span cost: library / otel-psycopg",
        )
    )
    res.notes = (
        "span cost: median with the SDK minus median without, per query; the SDK records"
        " every span (SimpleSpanProcessor, in memory); otel-psycopg instruments the raw"
        " pool's connections (instrument_connection) into the same tracer provider"
    )
    return res


async def run(env: Env, config: Config) -> list[Result]:
    """The telemetry cases."""
    return [await find_by_id(env, config)]
