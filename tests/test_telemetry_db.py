"""PostgreSQL spans and metrics (wis2l_core.telemetry._db), against the real server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import attrs
import psycopg
import pytest
from opentelemetry.trace import SpanKind, StatusCode
from psycopg.conninfo import conninfo_to_dict
from tests.helpers import make_project

from wis2l_core import Settings, Wis2l
from wis2l_core.config import SqlComments
from wis2l_core.db import typed
from wis2l_core.db.pool import Database
from wis2l_core.db.sql import load_queries
from wis2l_core.errors import Conflict, ServiceUnavailable, Wis2lError
from wis2l_core.telemetry._core import tracer
from wis2l_core.telemetry._sql import describe
from wis2l_core.testing.telemetry import Captured

SECRET = "tiramisu-7f3a"  # a parameter value no attribute may carry


@attrs.frozen
class Count:
    n: int


def database_name(settings: Settings) -> str:
    return str(conninfo_to_dict(settings.database_url)["dbname"])


@pytest.fixture
def queries(tmp_path: Path) -> Any:
    path = tmp_path / "reports.sql"
    path.write_text(
        "-- name: users_named :one\n"
        "SELECT count(*) AS n FROM users WHERE name = %(name)s::text;\n\n"
        "-- name: seen_by_server :one\n"
        "SELECT current_query() AS q;\n",
        encoding="utf-8",
    )
    return load_queries(path)


@pytest.fixture
async def database(wis2l_settings: Settings) -> AsyncIterator[Database]:
    db = Database(wis2l_settings)
    await db.open()
    yield db
    await db.close()


async def open_database(settings: Settings, **changes: Any) -> Database:
    db = Database(attrs.evolve(settings, **changes))
    await db.open()
    return db


async def test_a_repository_call_is_a_span_named_by_its_query(
    wis: Wis2l, wis2l_telemetry: Captured
) -> None:
    user = await wis.users.create(email="ada@example.com", name="Ada", subject="t|1")
    assert await wis.users.find_by_id(user.id) == user
    span = wis2l_telemetry.span("users.find_by_id")
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    attributes = dict(span.attributes or {})
    info = conninfo_to_dict(wis.settings.database_url)
    assert attributes == {
        "db.system.name": "postgresql",
        "db.namespace": database_name(wis.settings),
        "db.query.summary": "users.find_by_id",
        "db.operation.name": "SELECT",
        "db.collection.name": "users",
        "server.address": info["host"],
        "server.port": int(info.get("port") or 5432),
    }
    (point,) = [
        p
        for p in wis2l_telemetry.points("db.client.operation.duration")
        if p.attributes["db.query.summary"] == "users.find_by_id"
    ]
    assert point.count == 1
    assert 0 < point.sum < 5
    assert point.attributes["db.collection.name"] == "users"


async def test_a_pipelined_write_is_a_child_of_its_transaction(
    wis: Wis2l, wis2l_telemetry: Captured
) -> None:
    project = await make_project(wis)
    wis2l_telemetry.clear()
    await wis.components.create(project_id=project, name="C", language="lua", code="")
    write = wis2l_telemetry.span("components.create")
    record = wis2l_telemetry.span("events.insert_outbox")
    tx = wis2l_telemetry.span("transaction")
    for child in (write, record):
        assert child.parent is not None
        assert child.parent.span_id == tx.context.span_id
    assert write.attributes is not None
    assert write.attributes["db.operation.name"] == "INSERT"
    assert record.attributes is not None
    assert record.attributes["db.collection.name"] == "events"
    # the span ends when the pipeline hands the results over, not when the SQL is queued
    assert write.end_time is not None
    assert write.start_time is not None
    assert tx.start_time is not None
    assert tx.end_time is not None
    assert tx.start_time <= write.start_time <= write.end_time <= tx.end_time
    assert write.end_time - write.start_time > 10_000  # more than queuing (10 us)


async def test_an_app_query_is_named_by_its_file_and_name(
    wis: Wis2l, wis2l_telemetry: Captured, queries: Any
) -> None:
    assert await wis.database.fetch_val(queries["users_named"], {"name": SECRET}) == 0
    span = wis2l_telemetry.span("reports.users_named")
    assert span.attributes is not None
    assert span.attributes["db.query.summary"] == "reports.users_named"
    assert span.attributes["db.collection.name"] == "users"
    # the functions `wis2l db generate` writes run through the same cursor
    assert await typed.one(wis.database, queries["users_named"], {"name": SECRET}, Count)
    assert len(wis2l_telemetry.named("reports.users_named")) == 2
    # SQL of the app's own, unnamed: summarised as operation and table
    await wis.database.fetch_all("SELECT id FROM projects WHERE name = %s", [SECRET])
    adhoc = wis2l_telemetry.span("SELECT projects")
    assert adhoc.attributes is not None
    assert adhoc.attributes["db.operation.name"] == "SELECT"


async def test_a_failing_query_carries_its_sqlstate(wis: Wis2l, wis2l_telemetry: Captured) -> None:
    with pytest.raises(Wis2lError):
        await wis.database.fetch_val("SELECT 1 / %s::int", [0])
    span = wis2l_telemetry.span("SELECT")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["db.response.status_code"] == "22012"
    assert span.attributes["error.type"] == "DivisionByZero"
    failed = [
        p
        for p in wis2l_telemetry.points("db.client.operation.duration")
        if p.attributes.get("db.response.status_code") == "22012"
    ]
    assert failed
    assert failed[0].attributes["error.type"] == "DivisionByZero"
    # a failure inside a pipeline (a repository write) is its statement's
    await wis.users.create(email="cy@example.com", name="Cy", subject="t|3")
    wis2l_telemetry.clear()
    with pytest.raises(Conflict):
        await wis.users.create(email="cy@example.com", name="Cy", subject="t|4")
    write = wis2l_telemetry.span("users.create")
    assert write.attributes is not None
    assert write.attributes["db.response.status_code"] == "23505"
    tx = wis2l_telemetry.span("transaction")
    assert tx.status.status_code is StatusCode.ERROR


async def test_a_transaction_is_the_parent_of_its_statements(
    wis: Wis2l, wis2l_telemetry: Captured
) -> None:
    async with wis.transaction() as tx:
        await tx.users.find_by_id(uuid4())
        await tx.fetch_val("SELECT 1")
    (outer,) = list(wis2l_telemetry.named("transaction"))
    children = [wis2l_telemetry.span("users.find_by_id"), wis2l_telemetry.span("SELECT")]
    for child in children:
        assert child.parent is not None
        assert child.parent.span_id == outer.context.span_id
        assert child.context.trace_id == outer.context.trace_id
    assert outer.attributes is not None
    assert outer.attributes["db.system.name"] == "postgresql"


async def test_no_parameter_value_and_no_text_unless_asked(
    wis2l_settings: Settings, wis2l_telemetry: Captured, queries: Any
) -> None:
    db = await open_database(wis2l_settings)
    try:
        await db.fetch_val(queries["users_named"], {"name": SECRET})
        await db.fetch_all("SELECT id FROM users WHERE email = %(e)s", {"e": SECRET})
    finally:
        await db.close()
    traced = await open_database(wis2l_settings, otel_db_query_text=True)
    try:
        await traced.fetch_val(queries["users_named"], {"name": SECRET})
    finally:
        await traced.close()
    spans = wis2l_telemetry.named("reports.users_named")
    assert len(spans) == 2
    assert spans[0].attributes is not None
    assert "db.query.text" not in spans[0].attributes
    assert spans[1].attributes is not None
    assert spans[1].attributes["db.query.text"] == queries["users_named"].text
    recorded = [str(dict(s.attributes or {})) + str(s.events) for s in wis2l_telemetry.spans]
    recorded += [str(p.attributes) for p in wis2l_telemetry.points("db.client.operation.duration")]
    assert all(SECRET not in text for text in recorded)


async def test_sql_comments_name_the_query_for_the_server(
    wis2l_settings: Settings, wis2l_telemetry: Captured, queries: Any
) -> None:
    off = await open_database(wis2l_settings)
    named = await open_database(wis2l_settings, sql_comments=SqlComments.NAME)
    parented = await open_database(wis2l_settings, sql_comments=SqlComments.TRACEPARENT)
    try:
        assert await off.fetch_val(queries["seen_by_server"]) == "SELECT current_query() AS q"
        seen = await named.fetch_val(queries["seen_by_server"])
        assert seen == "/* reports.seen_by_server */ SELECT current_query() AS q"
        async with named.connection() as conn:  # prepared as usual: the text is stable
            for _ in range(2):
                await conn.execute(queries["seen_by_server"].text, prepare=True)
            cur = await conn.execute("SELECT statement FROM pg_prepared_statements")
            assert {"statement": seen} in await cur.fetchall()
        wis2l_telemetry.clear()
        seen = await parented.fetch_val(queries["seen_by_server"])
        span = wis2l_telemetry.span("reports.seen_by_server")
        context = span.context
        flags = f"{context.trace_flags:02x}"
        parent = f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags}"
        assert seen == (
            f"/* reports.seen_by_server traceparent='{parent}' */ SELECT current_query() AS q"
        )
        async with parented.connection() as conn:  # a text per call: never prepared
            await conn.execute(queries["seen_by_server"].text, prepare=True)
            cur = await conn.execute("SELECT count(*) AS n FROM pg_prepared_statements")
            assert await cur.fetchone() == {"n": 0}
    finally:
        for db in (off, named, parented):
            await db.close()


async def test_the_pool_reports_its_connections(wis: Wis2l, wis2l_telemetry: Captured) -> None:
    await wis.database.fetch_val("SELECT 1")
    name = f"{conninfo_to_dict(wis.settings.database_url)['host']}:"
    counts = [
        p
        for p in wis2l_telemetry.points("db.client.connection.count")
        if p.attributes["db.client.connection.pool.name"].startswith(name)
        and p.attributes["db.client.connection.pool.name"].endswith(
            "/" + database_name(wis.settings)
        )
    ]
    states = {p.attributes["db.client.connection.state"]: p.value for p in counts}
    assert set(states) == {"idle", "used"}
    assert states["idle"] + states["used"] >= 1
    (most,) = [
        p
        for p in wis2l_telemetry.points("db.client.connection.max")
        if p.attributes["db.client.connection.pool.name"]
        == counts[0].attributes["db.client.connection.pool.name"]
    ]
    assert most.value == wis.settings.db_pool_max_size
    assert wis2l_telemetry.points("db.client.connection.pending_requests")
    assert wis2l_telemetry.points("db.client.connection.timeouts")


async def test_waiting_for_a_connection_is_visible(
    wis2l_settings: Settings, wis2l_telemetry: Captured
) -> None:
    db = await open_database(
        wis2l_settings, db_pool_min_size=1, db_pool_max_size=1, db_pool_timeout=0.3
    )
    try:
        async with db.connection():
            waiter = asyncio.create_task(db.fetch_val("SELECT 1"))
            await asyncio.sleep(0.1)
        assert await waiter == 1
        span = wis2l_telemetry.span("db.client.connection.wait")
        assert span.end_time is not None
        assert span.start_time is not None
        assert span.end_time - span.start_time >= 50_000_000  # it waited for the holder
        (wait,) = wis2l_telemetry.points("db.client.connection.wait_time")
        assert wait.count == 1
        assert wait.sum >= 0.05
        async with db.connection():
            with pytest.raises(ServiceUnavailable):
                await db.fetch_val("SELECT 1")
        timed_out = wis2l_telemetry.named("db.client.connection.wait")[-1]
        assert timed_out.status.status_code is StatusCode.ERROR
        (timeouts,) = wis2l_telemetry.points("db.client.connection.timeouts")
        assert timeouts.value == 1
    finally:
        await db.close()


async def test_no_sdk_no_span(database: Database) -> None:
    if tracer() is not None:  # pragma: no cover - a global SDK was set by the process
        pytest.skip("a global tracer provider is set in this process")
    async with database.connection() as conn:
        cur = conn.cursor()
        pending = cur.execute("SELECT 1")
        # psycopg's own coroutine, handed back as is: no wrapper, no span
        assert pending.cr_code is psycopg.AsyncCursor.execute.__code__
        await pending
        assert await cur.fetchone() == {"?column?": 1}


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT * FROM users WHERE id = %s", ("SELECT", "users")),
        (
            "WITH moved AS (UPDATE events SET x = 1 RETURNING *) SELECT * FROM moved",
            ("UPDATE", "events"),
        ),
        ("WITH a AS (SELECT 1) UPDATE users SET n = 1 FROM a", ("UPDATE", "users")),
        ("SELECT * FROM users u JOIN projects p ON p.owner = u.id", ("SELECT", None)),
        ("SELECT * FROM a, b", ("SELECT", None)),
        ("SELECT extract(epoch FROM now() - created_at) FROM events", ("SELECT", "events")),
        ("SELECT id FROM users FOR UPDATE SKIP LOCKED", ("SELECT", "users")),
        ("INSERT INTO t (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET a = 2", ("INSERT", "t")),
        (
            "-- a comment\n/* another */ delete from \"My\".\"T\" where 'from x' = ''",
            ("DELETE", "My.T"),
        ),
        ("SELECT pg_advisory_lock(%s)", ("SELECT", None)),
        ("LISTEN wis2l_outbox", ("LISTEN", None)),
    ],
)
def test_describe(sql: str, expected: tuple[str | None, str | None]) -> None:
    assert describe(sql) == expected
