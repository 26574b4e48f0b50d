"""Your own SQL on the pool and inside ``wis.transaction()``; typed errors; the db surface."""

from __future__ import annotations

import ast
import logging
import secrets
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import psycopg
import pytest
from psycopg import sql
from tests.helpers import has, make_project

import wis2l_core.db
from wis2l_core import Settings, Wis2l
from wis2l_core.db import Database, Repositories, SchemaMissing, Transaction
from wis2l_core.db.sql import query_file
from wis2l_core.errors import (
    Conflict,
    MigrationError,
    ServiceUnavailable,
    ValidationError,
    Wis2lError,
)

INJECTION = "x'); DROP TABLE users; --"


@attrs.frozen
class Row:
    id: uuid.UUID
    email: str


# -- on the pool ------------------------------------------------------------------------


async def test_the_issue_example_and_each_method_on_the_pool(wis: Wis2l) -> None:
    db = wis.database
    assert await db.fetch_one("SELECT 1 AS one", {}) == {"one": 1}
    assert await db.fetch_one("SELECT 1 AS one") == {"one": 1}
    assert await db.fetch_one("SELECT 1 WHERE false") is None
    assert await db.fetch_val("SELECT %s::int + %s::int", (40, 2)) == 42
    assert await db.fetch_val("SELECT 1 WHERE false") is None
    rows = await db.fetch_all("SELECT g AS n FROM generate_series(1, %(top)s) g", {"top": 3})
    assert rows == [{"n": 1}, {"n": 2}, {"n": 3}]
    await db.execute("CREATE TABLE scratch (n int)")
    assert await db.execute("INSERT INTO scratch SELECT generate_series(1, 5)") == 5
    assert await db.execute("DELETE FROM scratch WHERE n > %s", [2]) == 3


async def test_composed_sql_named_queries_and_row_types(wis: Wis2l) -> None:
    user = await wis.users.create(email="ada@example.com", name="Ada", subject="s-ada")
    query = sql.SQL("SELECT {} FROM {} WHERE id = %s").format(
        sql.SQL(", ").join([sql.Identifier("id"), sql.Identifier("email")]),
        sql.Identifier("users"),
    )
    assert await wis.database.fetch_one(query, [user.id], row_type=Row) == Row(
        user.id, "ada@example.com"
    )
    named = query_file("users")["find_by_id"]
    found = await wis.database.fetch_one(named, {"id": user.id})
    assert found is not None
    assert found["subject"] == "s-ada"
    assert await wis.database.fetch_all("SELECT id, email FROM users", row_type=Row) == [
        Row(user.id, "ada@example.com")
    ]


async def test_values_are_parameters_never_sql(wis: Wis2l) -> None:
    tricky = [INJECTION, "%s", "%(x)s", "'; SELECT pg_sleep(10); --", "\\", "€ ✓ 𝄞"]
    for value in tricky:
        assert await wis.database.fetch_val("SELECT %s::text", [value]) == value
        assert await wis.database.fetch_val("SELECT %(v)s::text", {"v": value}) == value
    user = await wis.users.create(email="b@example.com", name=INJECTION, subject=INJECTION)
    again = await wis.database.fetch_one("SELECT name FROM users WHERE subject = %s", [INJECTION])
    assert again == {"name": INJECTION}
    assert await wis.users.find_by_id(user.id) is not None  # the table is still there


# -- inside a transaction ---------------------------------------------------------------


async def test_own_sql_commits_and_rolls_back_with_repository_writes(wis: Wis2l) -> None:
    await wis.database.execute("CREATE TABLE audit (project_id uuid NOT NULL, note text)")
    pid = await make_project(wis)

    class Boom(Exception):
        pass

    made: list[uuid.UUID] = []

    async def write_then_fail() -> None:
        async with wis.transaction() as tx:
            component = await tx.components.create(
                project_id=pid, name="Gone", language="lua", code=""
            )
            made.append(component.id)
            assert await tx.execute("INSERT INTO audit VALUES (%s, %s)", (pid, "made")) == 1
            # the transaction sees its own uncommitted writes; the pool does not
            assert await tx.fetch_val("SELECT count(*) FROM audit") == 1
            assert await wis.database.fetch_val("SELECT count(*) FROM audit") == 0
            raise Boom

    with pytest.raises(Boom):
        await write_then_fail()
    assert await wis.components.find_by_id(made[0]) is None
    assert await wis.database.fetch_val("SELECT count(*) FROM audit") == 0

    async with wis.transaction() as tx:
        kept = await tx.components.create(project_id=pid, name="Kept", language="lua", code="")
        await tx.execute("INSERT INTO audit VALUES (%(p)s, %(n)s)", {"p": pid, "n": "kept"})
        cur = await tx.connection.execute("SELECT note FROM audit")  # full psycopg access
        assert await cur.fetchall() == [{"note": "kept"}]
    assert await wis.components.find_by_id(kept.id) is not None
    assert await wis.database.fetch_all("SELECT note FROM audit") == [{"note": "kept"}]


async def test_a_failing_statement_rolls_back_the_whole_transaction(wis: Wis2l) -> None:
    pid = await make_project(wis)
    made: list[uuid.UUID] = []

    async def write_then_divide() -> None:
        async with wis.transaction() as tx:
            component = await tx.components.create(
                project_id=pid, name="Gone", language="lua", code=""
            )
            made.append(component.id)
            await tx.execute("SELECT 1/0")

    with pytest.raises(Wis2lError) as info:
        await write_then_divide()
    assert not isinstance(info.value, psycopg.Error)
    assert isinstance(info.value.__cause__, psycopg.errors.DivisionByZero)
    assert await wis.components.find_by_id(made[0]) is None


async def test_a_transaction_cannot_be_used_after_its_block(wis: Wis2l) -> None:
    async with wis.transaction() as tx:
        assert isinstance(tx, Transaction)
    with pytest.raises(Wis2lError, match="ended"):
        await tx.fetch_one("SELECT 1")
    with pytest.raises(Wis2lError, match="ended"):
        tx.connection  # noqa: B018


async def test_errors_on_the_raw_connection_leave_the_block_typed(wis: Wis2l) -> None:
    with pytest.raises(Wis2lError) as info:
        async with wis.transaction() as tx:
            await tx.connection.execute("SELEC 1")
    assert isinstance(info.value.__cause__, psycopg.errors.SyntaxError)
    with pytest.raises(Wis2lError) as info:
        async with wis.database.connection() as conn:
            await conn.execute("SELEC 1")
    assert isinstance(info.value.__cause__, psycopg.errors.SyntaxError)


# -- errors ------------------------------------------------------------------------------


async def test_bad_input_and_bad_sql_are_typed_errors(wis: Wis2l) -> None:
    db = wis.database
    # PostgreSQL text cannot hold NUL
    with pytest.raises(ValidationError, match="cannot contain NUL"):
        await db.fetch_val("SELECT %s::text", ["a\x00b"])
    with pytest.raises(ValidationError, match="invalid input syntax for type integer"):
        await db.fetch_val("SELECT %s::int", ["not a number"])
    with pytest.raises(ValidationError) as bad_params:
        await db.fetch_val("SELECT %s::text", "abc")  # a str is not a sequence of values
    assert bad_params.value.field == "params"
    with pytest.raises(ValidationError) as bad_sql:
        await db.fetch_val(b"SELECT 1")  # type: ignore[arg-type]
    assert bad_sql.value.field == "sql"
    with pytest.raises(ValidationError) as bad_row:
        await db.fetch_one("SELECT 1 AS nope", row_type=Row)
    assert bad_row.value.field == "row_type"
    for statement, params in [
        ("SELEC 1", None),
        ("SELECT %s", None),  # a placeholder without a value
        ("SELECT 1", [1]),  # a value without a placeholder
        ("SELECT 'a\x00b'", None),  # NUL inside the SQL text
        ("UPDATE users SET name = 'x' WHERE false", None),  # fetch of a statement with no rows
    ]:
        with pytest.raises(Wis2lError) as info:
            await db.fetch_all(statement, params)
        assert not isinstance(info.value, psycopg.Error)
    await wis.users.create(email="c@example.com", name="C", subject="s-c")
    with pytest.raises(Conflict, check=has(field="email")):
        await db.execute(
            "INSERT INTO users (id, email, name, subject) VALUES (%s, %s, 'C', 'other')",
            (uuid.uuid4(), "c@example.com"),
        )
    assert await db.fetch_val("SELECT 1") == 1  # the pool is fine after all that


async def test_query_log_names_queries_never_values(
    wis: Wis2l, caplog: pytest.LogCaptureFixture
) -> None:
    secret = secrets.token_hex(8)
    with caplog.at_level(logging.DEBUG, logger="wis2l_core.db"):
        await wis.database.fetch_val("SELECT %s::text", [secret])
        await wis.database.execute(f"SELECT '{secret}'")  # even a value written into the SQL
        await wis.users.find_by_email(f"{secret}@example.com")
        async with wis.transaction() as tx:
            await tx.fetch_val("SELECT %(s)s::text", {"s": secret})
    logged = [r for r in caplog.records if r.name == "wis2l_core.db"]
    assert len(logged) >= 4
    assert any("users.find_by_email" in r.getMessage() for r in logged)
    assert any(r.getMessage().startswith("sql.select#") for r in logged)
    for record in logged:
        assert secret not in record.getMessage()
        assert secret not in repr(record.__dict__)


async def test_a_pool_timeout_is_service_unavailable(wis: Wis2l) -> None:
    settings = attrs.evolve(
        wis.settings, db_pool_min_size=1, db_pool_max_size=1, db_pool_timeout=0.2
    )
    db = Database(settings)
    await db.open()
    try:
        async with db.connection():
            with pytest.raises(ServiceUnavailable, match="no free connection in time") as info:
                await db.fetch_val("SELECT 1")
            assert info.value.service == "database"
            with pytest.raises(ServiceUnavailable, match="no free connection in time"):
                await Repositories(db).users.find_by_email("a@example.com")
        assert await db.fetch_val("SELECT 1") == 1
    finally:
        await db.close()


@pytest.fixture
async def unmigrated(wis2l_settings: Settings, empty_database_url: str) -> AsyncIterator[Database]:
    db = Database(attrs.evolve(wis2l_settings, database_url=empty_database_url))
    await db.open()
    yield db
    await db.close()


async def test_an_unmigrated_database_is_one_clear_error(unmigrated: Database) -> None:
    repos = Repositories(unmigrated)
    for call in (
        lambda: repos.users.find_by_id(uuid.uuid4()),
        lambda: repos.users.create(email="a@example.com", name="A", subject="a"),
        repos.projects.find_all,
    ):
        with pytest.raises(SchemaMissing) as info:
            await call()
        assert isinstance(info.value, MigrationError | Wis2lError)
        assert "`wis2l db migrate`" in str(info.value)
        assert "\n" not in str(info.value)
        assert isinstance(info.value.__cause__, psycopg.errors.UndefinedTable)


# -- the package surface -----------------------------------------------------------------


def test_db_exports_a_deliberate_surface() -> None:
    assert wis2l_core.db.__all__ == [
        "BuildRepository",
        "ComponentRepository",
        "Connection",
        "Database",
        "DeploymentRepository",
        "EventRepository",
        "Params",
        "ProjectRepository",
        "Query",
        "QueryFile",
        "QueryMethods",
        "Repositories",
        "SchemaMissing",
        "Statement",
        "TemplateRepository",
        "TokenRepository",
        "Transaction",
        "UserRepository",
        "load_queries",
        "map_errors",
    ]
    for name in wis2l_core.db.__all__:
        assert getattr(wis2l_core.db, name) is not None, name
    assert not hasattr(Database, "execute_many")  # dead code, removed


def test_nothing_under_db_imports_the_runtime_or_events() -> None:
    root = Path(wis2l_core.db.__file__).parent
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith(("wis2l_core.runtime", "wis2l_core.events")), (
                    f"{path.name} imports {name}"
                )
                assert name.split(".")[0] != "nats", f"{path.name} imports {name}"


def _imports_nats(code: str) -> subprocess.CompletedProcess[str]:
    check = f"{code}; assert 'nats' not in sys.modules, [m for m in sys.modules if 'nats' in m]"
    return subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=False
    )


def test_the_db_package_does_not_load_nats() -> None:
    """db's own imports (the package root stubbed, so only db's dependencies count)."""
    root = Path(wis2l_core.db.__file__).parent.parent
    done = _imports_nats(
        "import sys, types; pkg = types.ModuleType('wis2l_core');"
        f" pkg.__path__ = [{str(root)!r}]; sys.modules['wis2l_core'] = pkg;"
        " import wis2l_core.db.users, wis2l_core.db.repositories, wis2l_core.db"
    )
    assert done.returncode == 0, done.stderr
