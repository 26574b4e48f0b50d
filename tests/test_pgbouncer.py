"""Behind PgBouncer, in transaction mode and in session mode.

Transaction mode hands each transaction (each autocommit statement) to whichever server
connection is free, so nothing may outlive one: no server-side prepared statement (before
PgBouncer 1.21 with ``max_prepared_statements``), no session advisory lock, no ``LISTEN``.
The settings that make the library fit are ``WIS2L_DB_PREPARED_STATEMENTS=false`` and
``DATABASE_DIRECT_URL`` (the server itself, for migrations and the relay's ``LISTEN``).
The pool has more client connections than PgBouncer has server connections, so statements
of different clients really do share server connections.
"""

from __future__ import annotations

import asyncio
import collections
import statistics
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from nats.js.api import DeliverPolicy
from tests.clusters.postgres import PgBouncer, PgCluster, pgbouncer_version

from wis2l_core import Settings, Wis2l
from wis2l_core.db.migrate import apply_migrations
from wis2l_core.db.sql import migrations
from wis2l_core.errors import Wis2lError
from wis2l_core.testing.plugin import drop_stream
from wis2l_core.testing.servers import Servers

VERSION = pgbouncer_version()

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.timeout(180),
    pytest.mark.skipif(VERSION is None, reason="PgBouncer is not installed"),
]

# PgBouncer 1.21+ keeps prepared statements working in transaction mode when
# max_prepared_statements is set (the harness sets it there); older ones need them off.
PREPARED_IN_TRANSACTION_MODE = VERSION is not None and VERSION >= (1, 21)
CALLS = 200


class Bouncers:
    """A primary (database ``wis2l``) with PgBouncer in front in both modes."""

    def __init__(self, cluster: PgCluster) -> None:
        self.cluster = cluster
        self.transaction = PgBouncer(
            cluster,
            cluster.primary,
            "transaction",
            pool_size=5,
            max_prepared_statements=200 if PREPARED_IN_TRANSACTION_MODE else 0,
        ).start()
        self.session = PgBouncer(cluster, cluster.primary, "session", pool_size=30).start()

    def direct(self, database: str = "wis2l") -> str:
        return self.cluster.primary.url(database)

    def create_database(self, name: str) -> None:
        with psycopg.connect(self.direct("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")


@pytest.fixture(scope="module")
def bouncers() -> Iterator[Bouncers]:
    with PgCluster() as cluster:
        cluster.start_primary()
        # The statement timeout a pooled connection cannot send as a startup option.
        with psycopg.connect(cluster.primary.url(), autocommit=True) as conn:
            conn.execute("ALTER ROLE postgres SET statement_timeout = '30s'")
        yield Bouncers(cluster)


def _settings(servers: Servers, database_url: str, **extra: Any) -> Settings:
    tag = uuid.uuid4().hex[:10]
    return Settings(
        database_url=database_url,
        redis_url=servers.redis_url,
        nats_urls=(servers.nats_url,),
        namespace=f"t{tag}",
        stream_name=f"T{tag.upper()}",
        db_pool_min_size=2,
        db_pool_max_size=20,
        **extra,
    )


async def _mixed_calls(wis: Wis2l, n: int) -> list[BaseException | object]:
    """``n`` concurrent calls of every kind: reads, writes with events, pipelined syncs."""
    tag = uuid.uuid4().hex[:8]
    user = await wis.users.create(email=f"o{tag}@example.com", name="O", subject=f"o{tag}")
    project = await wis.projects.create(owner_id=user.id, name="P", slug=f"p-{tag}", engine="godot")
    build = await wis.builds.create(project_id=project.id, target="web")

    async def call(i: int) -> object:
        kind = i % 8
        if kind == 0:
            return await wis.users.create(
                email=f"u{tag}{i}@example.com", name="U", subject=f"{tag}-{i}"
            )
        if kind == 1:
            return await wis.users.find_by_id(user.id)
        if kind == 2:
            return await wis.users.find_by_email(f"o{tag}@EXAMPLE.com")
        if kind == 3:
            return await wis.components.create(
                project_id=project.id, name=f"c{i}", language="lua", code="x"
            )
        if kind == 4:
            return await wis.tokens.upsert(
                project_id=project.id, name=f"t{i}", category="color", value={"hex": "#fff"}
            )
        if kind == 5:
            return await wis.projects.find_all(owner_id=user.id)
        if kind == 6:
            return await wis.builds.update(build.id, log=f"line {i}")
        async with wis.transaction() as tx:
            await tx.components.create(project_id=project.id, name=f"x{i}", language="lua", code="")
            return await tx.fetch_val(
                "SELECT count(*) FROM components WHERE project_id = %s", [project.id]
            )

    return await asyncio.gather(*(call(i) for i in range(n)), return_exceptions=True)


@pytest.mark.parametrize("mode", ["transaction", "session", "session-defaults"])
async def test_200_concurrent_mixed_calls_all_succeed(
    bouncers: Bouncers, wis2l_servers: Servers, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``session-defaults``: no setting changed at all (no direct URL, prepared statements
    on): the pool drops the statement-timeout option PgBouncer refuses, and says so."""
    bouncer = bouncers.transaction if mode == "transaction" else bouncers.session
    extra: dict[str, Any] = {}
    if mode != "session-defaults":
        extra["database_direct_url"] = bouncers.direct()
        extra["db_prepared_statements"] = mode == "session" or PREPARED_IN_TRANSACTION_MODE
    settings = _settings(wis2l_servers, bouncer.url(), **extra)
    try:
        await Wis2l(settings).migrate()
        async with Wis2l(settings) as wis:
            results = await _mixed_calls(wis, CALLS)
            failed = [r for r in results if isinstance(r, BaseException)]
            assert not failed, collections.Counter(str(e)[:120] for e in failed)
            # No startup option reached the server; the role's timeout applies instead.
            assert await wis.database.fetch_val("SHOW statement_timeout") == "30s"
    finally:
        await drop_stream(settings)
    refused = [r for r in caplog.records if "refused the statement_timeout" in r.getMessage()]
    assert bool(refused) is (mode == "session-defaults")


@pytest.mark.skipif(
    PREPARED_IN_TRANSACTION_MODE, reason="PgBouncer >= 1.21 with max_prepared_statements"
)
async def test_prepared_statements_break_transaction_mode(
    bouncers: Bouncers, wis2l_servers: Servers
) -> None:
    """The control: with prepared statements on, concurrent reads in transaction mode fail
    (why the setting exists). How many fail is up to timing: measured, not asserted."""
    settings = _settings(
        wis2l_servers, bouncers.transaction.url(), database_direct_url=bouncers.direct()
    )
    try:
        await Wis2l(settings).migrate()
        async with Wis2l(settings) as wis:
            missing = uuid.uuid4()
            results = await asyncio.gather(
                *(_read(wis, i, missing) for i in range(CALLS)), return_exceptions=True
            )
    finally:
        await drop_stream(settings)
    failed = [r for r in results if isinstance(r, BaseException)]
    print(f"FIGURES prepared-in-transaction-mode: {CALLS - len(failed)}/{CALLS} succeeded")
    assert failed
    assert all(isinstance(e, Wis2lError) for e in failed)


async def _read(wis: Wis2l, i: int, missing: uuid.UUID) -> object:
    if i % 4 == 0:
        return await wis.users.find_by_id(missing)
    if i % 4 == 1:
        return await wis.users.find_by_email("nobody@example.com")
    if i % 4 == 2:
        return await wis.projects.find_all(owner_id=missing)
    return await wis.templates.find_all()


@pytest.mark.parametrize("through", ["direct", "transaction-pooler"])
async def test_concurrent_migrations_apply_each_file_once_and_leave_no_lock(
    bouncers: Bouncers, through: str
) -> None:
    name = f"mig_{uuid.uuid4().hex[:8]}"
    bouncers.create_database(name)
    settings = Settings(
        database_url=bouncers.transaction.url(name),
        database_direct_url=bouncers.direct(name) if through == "direct" else None,
        db_prepared_statements=False,
    )
    runs = await asyncio.gather(
        *(apply_migrations(settings.direct_database_url, lock_timeout=30) for _ in range(4))
    )
    applied = [m for run in runs for m in run]
    assert sorted(applied) == sorted(m.name for m in migrations())
    with psycopg.connect(bouncers.direct(name), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT name, count(*) FROM wis2l_migrations GROUP BY name HAVING count(*) > 1"
        ).fetchall()
        assert rows == []
        held = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()
        assert held == (0,)


async def _latencies(wis: Wis2l, count: int, timeout: float) -> list[float]:
    """Seconds from each write's return to its event's arrival on the stream."""
    tag = uuid.uuid4().hex[:8]
    user = await wis.users.create(email=f"l{tag}@example.com", name="L", subject=f"l{tag}")
    project = await wis.projects.create(owner_id=user.id, name="P", slug=f"l-{tag}", engine="godot")
    sub = await wis.bus.jetstream.subscribe(
        f"{wis.bus.namespace}.component.created",
        stream=wis.settings.stream_name,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.NEW,
    )
    seen: list[float] = []
    try:
        for i in range(count):
            await asyncio.sleep(0.05 * (i % 5))  # not in step with the poll
            await wis.components.create(
                project_id=project.id, name=f"l{i}", language="lua", code=""
            )
            written = time.perf_counter()
            await sub.next_msg(timeout=timeout)
            seen.append(time.perf_counter() - written)
    finally:
        await sub.unsubscribe()
    return seen


@pytest.mark.timing
@pytest.mark.parametrize("direct", [True, False], ids=["listen-direct", "polling"])
async def test_the_relay_delivers_behind_a_transaction_pooler(
    bouncers: Bouncers, wis2l_servers: Servers, direct: bool
) -> None:
    settings = _settings(
        wis2l_servers,
        bouncers.transaction.url(),
        database_direct_url=bouncers.direct() if direct else None,
        db_prepared_statements=False,
    )
    try:
        await Wis2l(settings).migrate()
        async with Wis2l(settings) as wis:
            poll = wis.relay.poll_interval
            seen = await _latencies(wis, 20 if direct else 8, timeout=poll + 2.0)
    finally:
        await drop_stream(settings)
    label = "LISTEN via DATABASE_DIRECT_URL" if direct else f"polling every {poll:g} s"
    print(
        f"FIGURES relay {label}: median {statistics.median(seen) * 1000:.0f} ms,"
        f" max {max(seen) * 1000:.0f} ms over {len(seen)} events"
    )
    if direct:
        assert statistics.median(seen) < 0.5 * poll  # woken by NOTIFY, not by the poll
    else:
        assert max(seen) < poll + 1.0
