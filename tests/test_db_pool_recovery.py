"""The pool after a lost server, prepared statements off, and libpq's URL forms.

On the suite's own PostgreSQL (no cluster): the server-side events of a failover are
made by hand. ``pg_terminate_backend`` is what a shutting-down server sends its clients
(``admin_shutdown``), and a database made read-only under open connections is what a
demoted primary looks like to them. The full failover runs in test_pg_failover.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import attrs
import psycopg
import psycopg.conninfo
import pytest
from psycopg import sql

from helpers import eventually
from test_lifecycle import PrivateStack
from wis2l_core import Settings, Wis2l
from wis2l_core.db.connect import connect_kwargs
from wis2l_core.db.pool import Database
from wis2l_core.errors import ServiceUnavailable, Wis2lError
from wis2l_core.runtime import Repositories

POOL = 4


@pytest.fixture
async def db(wis2l_settings: Settings) -> AsyncIterator[Database]:
    settings = attrs.evolve(wis2l_settings, db_pool_min_size=POOL, db_pool_max_size=POOL)
    database = Database(settings)
    await database.open()
    await database.pool.wait()  # all POOL connections made
    yield database
    await database.close()


def _admin(url: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(url, autocommit=True)


async def _outcomes(repos: Repositories, n: int, *, write: bool) -> list[bool]:
    """``n`` calls one after another: True for each that succeeded."""
    outcomes = []
    for i in range(n):
        try:
            if write:
                tag = uuid.uuid4().hex
                await repos.users.create(email=f"{tag}@example.com", name=f"n{i}", subject=tag)
            else:
                await repos.users.find_by_id(uuid.uuid4())
        except Wis2lError:
            outcomes.append(False)
        else:
            outcomes.append(True)
    return outcomes


@pytest.mark.parametrize("write", [False, True], ids=["read", "write"])
async def test_terminated_connections_fail_one_call_not_one_per_connection(
    db: Database, wis2l_database_url: str, write: bool
) -> None:
    repos = Repositories(db)
    with _admin(wis2l_database_url) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = 'wis2l-core'"
        ).fetchone()
    assert killed == (POOL,)
    # Without discarding the pool, each of the POOL dead connections fails one call.
    assert await _outcomes(repos, POOL + 2, write=write) == [False] + [True] * (POOL + 1)


async def test_a_server_turned_read_only_discards_the_pool(
    db: Database, wis2l_database_url: str
) -> None:
    """The pool's open connections see a read-only server (as after a failover that left
    them on a standby): one write fails, the connections are replaced, writes go on."""
    await db.close()
    name = wis2l_database_url.rsplit("/", 1)[1]
    with _admin(wis2l_database_url) as admin:
        admin.execute(
            sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(
                sql.Identifier(name)
            )
        )
        await db.open()
        await db.pool.wait()
        admin.execute(
            sql.SQL("ALTER DATABASE {} RESET default_transaction_read_only").format(
                sql.Identifier(name)
            )
        )
    repos = Repositories(db)
    with pytest.raises(ServiceUnavailable, match="read-only") as refused:
        await repos.users.create(email="ro@example.com", name="ro", subject="ro")
    assert refused.value.service == "database"
    assert await _outcomes(repos, POOL, write=True) == [True] * POOL


@pytest.mark.parametrize("prepared", [True, False])
async def test_prepared_statements_setting(wis2l_settings: Settings, prepared: bool) -> None:
    settings = attrs.evolve(
        wis2l_settings, db_pool_min_size=1, db_pool_max_size=1, db_prepared_statements=prepared
    )
    database = Database(settings)
    await database.open()
    try:
        repos = Repositories(database)
        tag = uuid.uuid4().hex
        user = await repos.users.create(email=f"{tag}@example.com", name="P", subject=tag)
        for _ in range(7):  # past psycopg's automatic threshold (5) too
            assert await repos.users.find_by_id(user.id) == user
            await database.fetch_val("SELECT 1 + %s", [1])
        count = await database.fetch_val("SELECT count(*) FROM pg_prepared_statements")
    finally:
        await database.close()
    assert (count > 0) is prepared


def test_connect_kwargs_behind_a_pooler() -> None:
    server = Settings(database_url="postgresql://app@db/wis2l")
    assert server.db_statement_timeout == 30
    assert connect_kwargs(server)["options"] == "-c statement_timeout=30000"
    assert "prepare_threshold" not in connect_kwargs(server)

    no_prepare = attrs.evolve(server, db_prepared_statements=False)
    assert connect_kwargs(no_prepare)["prepare_threshold"] is None
    assert "options" not in connect_kwargs(no_prepare)

    direct = attrs.evolve(server, database_direct_url="postgresql://app@pg/wis2l")
    assert "options" not in connect_kwargs(direct)
    assert connect_kwargs(direct, direct=True)["options"] == "-c statement_timeout=30000"
    assert "options" not in connect_kwargs(attrs.evolve(server, db_statement_timeout=0))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql://app:s3cret@h1:5432,h2:5433/wis2l?target_session_attrs=read-write",
            {"host": "h1,h2", "port": "5432,5433", "target_session_attrs": "read-write"},
        ),
        (
            "postgresql://app@/wis2l?host=h1,h2&port=5432,5433&password=s3cret"
            "&target_session_attrs=primary",
            {"host": "h1,h2", "port": "5432,5433", "target_session_attrs": "primary"},
        ),
        ("postgresql://app:s3cret@h1,h2/wis2l", {"host": "h1,h2"}),
        (
            "postgresql://app:s3cret@[::1]:5432,[::1]:5433/wis2l",
            {"host": "::1,::1", "port": "5432,5433"},
        ),
        (
            "postgresql://app:s3cret@db/wis2l?hostaddr=10.0.0.5,10.0.0.6&sslmode=require",
            {"host": "db", "hostaddr": "10.0.0.5,10.0.0.6", "sslmode": "require"},
        ),
        ("postgresql:///wis2l?host=/run/postgresql&password=s3cret", {"host": "/run/postgresql"}),
        ("postgresql://app:s3cret@%2Frun%2Fpostgresql/wis2l", {"host": "/run/postgresql"}),
    ],
)
def test_libpq_url_forms(url: str, expected: dict[str, str]) -> None:
    for field in ("database_url", "database_direct_url"):
        settings = Settings(**{field: url})  # type: ignore[arg-type]
        assert "s3cret" not in repr(settings)
        env = Settings.from_env({"DATABASE_URL": url, "DATABASE_DIRECT_URL": url})
        assert env.database_url == env.direct_database_url == url
        assert "s3cret" not in repr(env)
    parsed = psycopg.conninfo.conninfo_to_dict(url)
    assert {k: parsed[k] for k in expected} == expected
    assert parsed.get("password", "s3cret") == "s3cret"


# -- the server stopped: one line per outage, and an answer at once ------------------------


@pytest.fixture
def private_stack() -> Iterator[PrivateStack]:
    private = PrivateStack()
    try:
        private.start()
        yield private
    finally:
        private.close()


def _outage_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Warnings (and worse) from the pool, the runtime and psycopg_pool."""
    return [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith(("wis2l_core", "psycopg"))
    ]


async def _refused_at_once(database: Database, bound: float) -> None:
    """The pool knows the server is gone: a borrow fails with ServiceUnavailable at once."""
    await eventually(lambda: database.down, timeout=10)
    started = time.perf_counter()
    with pytest.raises(ServiceUnavailable) as info:
        await database.fetch_val("SELECT 1")
    took = time.perf_counter() - started
    assert info.value.service == "database"
    assert "database unreachable" in str(info.value)
    assert took < bound, f"waited {took:.2f} s: not at once"  # not the full pool timeout


@pytest.mark.disruptive
@pytest.mark.timing
@pytest.mark.slow
async def test_a_stopped_server_is_one_warning_per_outage_and_borrows_fail_at_once(
    private_stack: PrivateStack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    settings = private_stack.settings(db_pool_timeout=8.0, db_pool_min_size=2, db_fail_fast=True)
    database = Database(settings)
    await database.open()
    try:
        for outage in (1, 2):
            assert await database.fetch_val("SELECT 1") == 1
            private_stack.kill("database", signal.SIGINT)  # PostgreSQL's fast shutdown
            with contextlib.suppress(ServiceUnavailable):
                await database.fetch_val("SELECT 1")  # finds the connection lost
            await _refused_at_once(database, bound=settings.db_pool_timeout / 4)
            for _ in range(20):  # about 8 attempts to reconnect meanwhile
                with pytest.raises(ServiceUnavailable):
                    await database.fetch_val("SELECT 1")
                await asyncio.sleep(0.1)
            lines = _outage_lines(caplog)
            heads = [r.getMessage().split(":")[0] for r in lines]
            assert heads == ["database unreachable"] * outage
            assert "Connection refused" in lines[-1].getMessage()

            private_stack.restart("database")  # recovery needs no call: the pool reconnects
            await eventually(lambda: not database.down, timeout=10)
            assert await database.fetch_val("SELECT 1") == 1
            back = [r for r in caplog.records if "database available again" in r.getMessage()]
            assert len(back) == outage
            assert back[-1].levelno == logging.INFO
    finally:
        await database.close()


@pytest.mark.disruptive
@pytest.mark.timing
@pytest.mark.slow
async def test_development_start_with_the_database_stopped_logs_once_and_recovers(
    private_stack: PrivateStack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    settings = private_stack.settings(
        db_pool_timeout=8.0, db_connect_timeout=5.0, db_fail_fast=True
    )
    await Wis2l(settings).migrate()
    private_stack.kill("database", signal.SIGINT)
    started = time.perf_counter()
    async with Wis2l(settings, seed_subscribers=False) as wis:
        took = time.perf_counter() - started
        assert took < settings.db_connect_timeout / 2, f"start took {took:.2f} s"
        assert wis.database.down
        await _refused_at_once(wis.database, bound=settings.db_pool_timeout / 4)
        await asyncio.sleep(2)  # the pool, the relay and its LISTEN connection retry
        with pytest.raises(ServiceUnavailable):
            await wis.users.find_by_id(uuid.uuid4())
        lines = _outage_lines(caplog)
        assert len(lines) == 1, [r.getMessage() for r in lines]
        assert lines[0].getMessage().startswith("database unreachable at start")

        private_stack.restart("database")
        await eventually(lambda: not wis.database.down, timeout=10)
        assert await wis.users.find_by_id(uuid.uuid4()) is None
    assert len(_outage_lines(caplog)) == 1
