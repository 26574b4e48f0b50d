"""App-owned migrations and queries: `wis2l db new`, WIS2L_MIGRATIONS sources, load_queries."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import attrs
import psycopg
import pytest
from tests.helpers import field_is

from wis2l_core import Wis2l
from wis2l_core.cli import main
from wis2l_core.config import MigrationSource, Settings
from wis2l_core.db import load_queries
from wis2l_core.db.migrate import apply_migrations, check_schema, migration_status, new_migration
from wis2l_core.db.sql import migrations
from wis2l_core.errors import ConfigError, Conflict, MigrationError, ValidationError

LIBRARY = [m.name for m in migrations()]


def rows(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return [
            (str(s), str(n))
            for s, n in conn.execute("SELECT source, name FROM wis2l_migrations ORDER BY 1, 2")
        ]


def folder(root: Path, name: str, files: dict[str, str]) -> MigrationSource:
    path = root / name
    path.mkdir()
    for file, text in files.items():
        (path / file).write_text(text)
    return MigrationSource(name=name, path=path)


# -- wis2l db new --------------------------------------------------------------------------


def test_new_numbers_from_0001_and_after_the_highest(tmp_path: Path) -> None:
    target = tmp_path / "fresh" / "migrations"  # created when missing
    first = new_migration(target, "create-orders")
    assert first == target / "0001_create_orders.sql"
    text = first.read_text()
    assert text.startswith("-- migrations 0001: create orders\n")
    assert "Forward-only" in text
    (target / "0007_by_hand.sql").write_text("SELECT 1;\n")
    assert new_migration(target, "add_index").name == "0008_add_index.sql"


@pytest.mark.parametrize("name", ["Orders", "add orders", "1;drop", "", "a__b", "_x", "é"])
def test_new_refuses_a_name_that_is_not_a_slug(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValidationError, match="slug"):
        new_migration(tmp_path, name)
    assert list(tmp_path.iterdir()) == []


def test_new_never_overwrites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A racing `db new` created the same file between the scan and the create.
    taken = tmp_path / "0001_orders.sql"
    real_glob = Path.glob

    def racing_glob(self: Path, pattern: str):  # type: ignore[no-untyped-def]
        found = list(real_glob(self, pattern))
        taken.write_text("-- mine\n")
        return iter(found)

    monkeypatch.setattr(Path, "glob", racing_glob)
    with pytest.raises(Conflict, match="already exists"):
        new_migration(tmp_path, "orders")
    assert taken.read_text() == "-- mine\n"


def test_cli_new_uses_wis2l_migrations_or_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("WIS2L_MIGRATIONS", raising=False)
    assert main(["db", "new", "orders"]) == 2
    err = capsys.readouterr().err
    assert err == "wis2l db new: error: no migrations folder: set WIS2L_MIGRATIONS or pass --dir\n"

    monkeypatch.setenv("WIS2L_MIGRATIONS", f"shop={tmp_path / 'shop'}")
    assert main(["db", "new", "orders"]) == 0
    out = capsys.readouterr().out.strip()
    assert out == str(tmp_path / "shop" / "0001_orders.sql")
    assert "-- shop 0001: orders" in Path(out).read_text()
    assert main(["db", "new", "orders"]) == 0
    assert capsys.readouterr().out.strip().endswith("0002_orders.sql")

    assert main(["db", "new", "Bad Name"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "not a slug" in err

    monkeypatch.setenv("WIS2L_MIGRATIONS", f"a={tmp_path / 'a'},b={tmp_path / 'b'}")
    assert main(["db", "new", "orders"]) == 2
    assert "pass --dir" in capsys.readouterr().err
    assert main(["db", "new", "orders", "--dir", str(tmp_path / "b")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "b" / "0001_orders.sql")


# -- settings --------------------------------------------------------------------------------


def test_wis2l_migrations_parses_names_and_paths(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"WIS2L_MIGRATIONS": f"shop={tmp_path}/db, {tmp_path}/billing", "WIS2L_QUERIES": "q1,q2"}
    )
    assert settings.migrations == (
        MigrationSource("shop", tmp_path / "db"),
        MigrationSource("billing", tmp_path / "billing"),
    )
    assert settings.queries == (Path("q1"), Path("q2"))
    for bad in ("wis2l-core=x", "a=x,a=y", "bad name=x"):
        with pytest.raises(ConfigError) as info:
            Settings.from_env({"WIS2L_MIGRATIONS": bad})
        assert info.value.variable == "WIS2L_MIGRATIONS"


# -- sources against the database -------------------------------------------------------------


async def test_two_sources_apply_in_order_with_independent_numbering(
    wis2l_database_url: str, tmp_path: Path
) -> None:
    shop = folder(
        tmp_path,
        "shop",
        {
            "0001_initial_schema.sql": "CREATE TABLE shop_orders (id uuid PRIMARY KEY);",
            "0002_total.sql": "ALTER TABLE shop_orders ADD COLUMN total int NOT NULL DEFAULT 0;",
        },
    )
    # billing depends on shop's table: it must run after shop's files.
    billing = folder(
        tmp_path,
        "billing",
        {"0001_invoices.sql": "CREATE TABLE invoices (o uuid REFERENCES shop_orders);"},
    )
    status = await migration_status(wis2l_database_url, sources=[shop, billing])
    assert status.applied == tuple(LIBRARY)
    assert status.pending == (
        "shop/0001_initial_schema",
        "shop/0002_total",
        "billing/0001_invoices",
    )
    applied = await apply_migrations(wis2l_database_url, sources=[shop, billing])
    assert applied == list(status.pending)
    assert await apply_migrations(wis2l_database_url, sources=[shop, billing]) == []
    assert ("shop", "0001_initial_schema") in rows(wis2l_database_url)
    assert ("wis2l-core", "0001_initial_schema") in rows(wis2l_database_url)
    again = await migration_status(wis2l_database_url, sources=[shop, billing])
    assert again.pending == ()
    assert again.drifted == ()
    assert again.applied[-3:] == tuple(applied)
    # health's check still looks at the library's own migrations only.
    async with await psycopg.AsyncConnection.connect(
        wis2l_database_url, row_factory=psycopg.rows.dict_row
    ) as conn:
        assert await check_schema(conn)


async def test_drift_in_an_app_file_stops_everything(
    wis2l_database_url: str, tmp_path: Path
) -> None:
    shop = folder(tmp_path, "shop", {"0001_a.sql": "CREATE TABLE drift_a (id int);"})
    await apply_migrations(wis2l_database_url, sources=[shop])
    (shop.path / "0001_a.sql").write_text("CREATE TABLE drift_a (id bigint);")
    (shop.path / "0002_b.sql").write_text("CREATE TABLE drift_b (id int);")
    with pytest.raises(MigrationError) as info:
        await apply_migrations(wis2l_database_url, sources=[shop])
    assert info.value.migration == "shop/0001_a"
    status = await migration_status(wis2l_database_url, sources=[shop])
    assert status.drifted == ("shop/0001_a",)
    assert status.pending == ("shop/0002_b",)


async def test_a_missing_app_folder_is_a_config_error(
    wis2l_database_url: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="not a folder"):
        await apply_migrations(
            wis2l_database_url, sources=[MigrationSource("gone", tmp_path / "gone")]
        )


@pytest.mark.slow
async def test_concurrent_runners_apply_each_app_file_once(
    wis2l_database_url: str, tmp_path: Path
) -> None:
    # Not idempotent: a second application would fail on the duplicate table.
    shop = folder(
        tmp_path,
        "shop",
        {f"{i:04d}_t{i}.sql": f"CREATE TABLE conc_{i} (id int);" for i in range(1, 6)},
    )
    results = await asyncio.gather(
        *(apply_migrations(wis2l_database_url, sources=[shop]) for _ in range(4))
    )
    assert sorted(name for result in results for name in result) == [
        f"shop/{i:04d}_t{i}" for i in range(1, 6)
    ]
    assert sum(1 for source, _ in rows(wis2l_database_url) if source == "shop") == 5


def test_cli_migrate_and_status_list_both_sources(
    wis2l_database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    shop = folder(tmp_path, "shop", {"0001_orders.sql": "CREATE TABLE cli_orders (id int);"})
    monkeypatch.setenv("WIS2L_MIGRATIONS", f"shop={shop.path}")
    argv = ["--database-url", wis2l_database_url]
    assert main(["db", "status", *argv, "--fail-on-pending"]) == 1
    out = capsys.readouterr().out
    assert f"applied  {LIBRARY[0]}" in out
    assert "pending  shop/0001_orders" in out
    assert main(["db", "migrate", *argv]) == 0
    assert capsys.readouterr().out == "applied shop/0001_orders\n"
    assert main(["db", "status", *argv, "--fail-on-pending"]) == 0
    assert "applied  shop/0001_orders" in capsys.readouterr().out
    monkeypatch.setenv("WIS2L_MIGRATIONS", f"shop={tmp_path / 'nowhere'}")
    assert main(["db", "migrate", *argv]) == 2
    assert "not a folder" in capsys.readouterr().err


# -- upgrade of the old table shape -------------------------------------------------------------


async def test_an_old_wis2l_migrations_table_is_upgraded_in_place(empty_database_url: str) -> None:
    old = [m for m in migrations() if m.name < "0003"]
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        # The table as the runner created it before sources existed, with 0001 and 0002.
        conn.execute(
            "CREATE TABLE wis2l_migrations (name text PRIMARY KEY, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now(), duration_ms double precision"
            " NOT NULL)"
        )
        for migration in old:
            conn.execute(migration.text.encode())
            conn.execute(
                "INSERT INTO wis2l_migrations (name, checksum, duration_ms) VALUES (%s, %s, 1)",
                (migration.name, migration.checksum),
            )
        before = conn.execute("SELECT name, applied_at FROM wis2l_migrations").fetchall()
    status = await migration_status(empty_database_url)
    assert status.applied == tuple(m.name for m in old)
    newer = [m.name for m in migrations() if m.name >= "0003"]
    assert status.pending == tuple(newer)
    assert await apply_migrations(empty_database_url) == newer
    with psycopg.connect(empty_database_url) as conn:
        after = conn.execute(
            "SELECT name, applied_at FROM wis2l_migrations WHERE name < '0003'"
        ).fetchall()
        sources = conn.execute("SELECT DISTINCT source FROM wis2l_migrations").fetchall()
    assert after == before  # nothing re-applied
    assert sources == [("wis2l-core",)]
    assert rows(empty_database_url) == [("wis2l-core", n) for n in LIBRARY]


async def test_a_fresh_database_gets_the_same_shape(empty_database_url: str) -> None:
    assert await apply_migrations(empty_database_url) == LIBRARY
    with psycopg.connect(empty_database_url) as conn:
        key = conn.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = 'wis2l_migrations'::regclass AND contype = 'p'"
        ).fetchone()
    assert key == ("PRIMARY KEY (source, name)",)
    assert rows(empty_database_url) == [("wis2l-core", n) for n in LIBRARY]


# -- app queries ----------------------------------------------------------------------------


@attrs.frozen
class Note:
    id: uuid.UUID
    body: str


NOTES = """\
-- name: create_table
CREATE TABLE IF NOT EXISTS app_notes (id uuid PRIMARY KEY, body text NOT NULL)

-- name: insert
INSERT INTO app_notes (id, body) VALUES (%(id)s::uuid, %(body)s::text) RETURNING id, body;

-- name: page
SELECT id, body FROM app_notes
WHERE id > %(after)s::uuid AND body LIKE %(prefix)s::text
ORDER BY id LIMIT %(limit)s::int;
"""


def test_load_queries_reports_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "notes.sql"
    path.write_text(NOTES)
    queries = load_queries(path)
    assert [q.name for q in queries] == ["create_table", "insert", "page"]
    assert queries["page"].params == ("after", "prefix", "limit")
    assert queries["insert"].file == "notes.sql"
    with pytest.raises(KeyError, match=r"notes\.sql"):
        queries["nope"]
    path.write_text("SELECT 1;\n-- name: x\nSELECT 2;\n")
    with pytest.raises(ValidationError, match=r"notes\.sql:1: SQL before"):
        load_queries(path)
    with pytest.raises(ValidationError, match="cannot read"):
        load_queries(tmp_path / "missing.sql")


async def test_app_queries_run_on_the_pool_and_in_a_transaction(wis: Wis2l, tmp_path: Path) -> None:
    path = tmp_path / "notes.sql"
    path.write_text(NOTES)
    q = load_queries(path)
    await wis.database.execute(q["create_table"])
    ids = sorted(uuid.uuid4() for _ in range(5))
    async with wis.transaction() as tx:
        for i, key in enumerate(ids):
            note = await tx.fetch_one(q["insert"], {"id": key, "body": f"n{i}"}, row_type=Note)
            assert note == Note(key, f"n{i}")
    first = await wis.database.page(q["page"], {"prefix": "n%"}, limit=2, row_type=Note)
    assert [n.id for n in first] == ids[:2]
    assert first.next_cursor is not None
    seen = list(first)
    cursor: str | None = first.next_cursor
    while cursor:
        page = await wis.database.page(q["page"], {"prefix": "n%"}, limit=2, after=cursor)
        seen.extend(Note(**row) for row in page)
        cursor = page.next_cursor
    assert [n.id for n in seen] == ids
    with pytest.raises(ValidationError, check=field_is("after")):
        await wis.database.page(q["page"], {"prefix": "n%"}, after="bogus")
    with pytest.raises(ValidationError, check=field_is("after")):  # a cursor from another list
        await wis.database.page(q["insert"], {}, after=first.next_cursor)

    # Rolled back with the transaction.
    async def fails() -> None:
        async with wis.transaction() as tx:
            await tx.execute(q["insert"], {"id": uuid.uuid4(), "body": "gone"})
            raise RuntimeError

    with pytest.raises(RuntimeError):
        await fails()
    assert await wis.database.fetch_val("SELECT count(*) FROM app_notes") == 5


def test_db_check_prepares_the_app_query_folders(
    wis2l_database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    queries = tmp_path / "queries"
    queries.mkdir()
    (queries / "notes.sql").write_text("-- name: ok\nSELECT 1\n\n-- name: bad\nSELECT nope\n")
    monkeypatch.setenv("WIS2L_QUERIES", str(queries))
    assert main(["db", "check", "--database-url", wis2l_database_url]) == 1
    out = capsys.readouterr().out
    assert f'{queries}/notes.sql:5: bad: column "nope" does not exist' in out
    assert "sql/queries/" not in out  # the library's queries pass
    (queries / "notes.sql").write_text("-- name: ok\nSELECT 1\n")
    assert main(["db", "check", "--database-url", wis2l_database_url]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.endswith(": 0 failed")
    monkeypatch.setenv("WIS2L_QUERIES", str(tmp_path / "nowhere"))
    assert main(["db", "check", "--database-url", wis2l_database_url]) == 2
    assert "WIS2L_QUERIES" in capsys.readouterr().err
