"""`wis2l db generate`: typed modules from an app's .sql files, checked against PostgreSQL."""

from __future__ import annotations

import decimal
import importlib.util
import itertools
import subprocess
import sys
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import pytest
from mypy import api as mypy_api

from wis2l_core import Wis2l
from wis2l_core.cli import main
from wis2l_core.config import MigrationSource, Settings
from wis2l_core.db.generate import GenerateError, describe_files, read_folders, write_modules
from wis2l_core.db.migrate import apply_migrations
from wis2l_core.db.sql import parse_queries, sql_root
from wis2l_core.errors import ValidationError

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

SCHEMA = """\
CREATE TYPE mood AS ENUM ('calm', 'tilted', 'on-fire');
CREATE TABLE notes (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    build_id uuid REFERENCES builds (id) ON DELETE CASCADE,
    body text NOT NULL,
    mood mood NOT NULL,
    score numeric(5, 2),
    tags text[] NOT NULL DEFAULT '{}',
    extra jsonb NOT NULL DEFAULT '{}',
    seen_on date,
    at time,
    blob bytea,
    ratio float8,
    done boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE reactions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    note_id uuid NOT NULL REFERENCES notes (id) ON DELETE CASCADE,
    emoji text NOT NULL
);
"""

QUERIES = """\
-- Playtest notes: the app's own table.

-- name: add_note :one
-- Add a note, optionally on a build.
INSERT INTO notes (body, mood, score, tags, extra, build_id)
VALUES (%(body)s::text, %(mood)s::mood, %(score)s::numeric, %(tags)s::text[],
        %(extra)s::jsonb, %(build_id)s::uuid)
RETURNING id, body, mood, score, tags, extra, created_at;

-- name: add_reaction :exec
INSERT INTO reactions (note_id, emoji) VALUES (%(note_id)s::uuid, %(emoji)s::text);

-- name: find_note :one
SELECT id, build_id, body, mood, score, tags, extra, seen_on, at, blob, ratio, done,
       created_at
FROM notes WHERE id = %(id)s::uuid;

-- name: with_reactions
SELECT n.id, n.body, r.emoji, r.id AS reaction_id
FROM notes n LEFT JOIN reactions r ON r.note_id = n.id
WHERE n.mood = %(mood)s::mood
ORDER BY n.id, r.emoji;

-- name: reactions_right
SELECT n.body, r.emoji FROM notes n RIGHT JOIN reactions r ON r.note_id = n.id;

-- name: reactions_full
SELECT n.body, r.emoji FROM notes n FULL JOIN reactions r ON r.note_id = n.id;

-- name: reactions_inner
SELECT n.body, r.emoji FROM notes n JOIN reactions r ON r.note_id = n.id;

-- name: stats :one
SELECT count(*) AS total, count(*) AS "counted!", upper(min(body)) AS shout,
       min(body) AS "any_body?"
FROM notes;

-- name: rescore :exec
UPDATE notes SET score = %(score)s::numeric, body = %(body)s::text WHERE id = %(id)s::uuid;

-- name: calm_down :exec
UPDATE notes SET mood = 'calm' WHERE mood = %(mood)s::mood;

-- name: by_build :page
SELECT id, body FROM notes
WHERE (%(build_id)s::uuid IS NULL OR build_id = %(build_id)s::uuid)
  AND id > %(after)s::uuid
ORDER BY id
LIMIT %(limit)s::int;
"""

_modules = itertools.count()


def load(path: Path) -> ModuleType:
    """Import a generated module under a fresh name (tests import several versions)."""
    spec = importlib.util.spec_from_file_location(f"generated_{next(_modules)}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@attrs.frozen
class App:
    settings: Settings
    queries: Path
    out: Path


@pytest.fixture
def app(tmp_path: Path, wis2l_database_url: str) -> App:
    """An app with a migration (an enum, two tables) and a query file, on a migrated database."""
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "0001_notes.sql").write_text(SCHEMA)
    queries = tmp_path / "queries"
    queries.mkdir()
    (queries / "playtest.sql").write_text(QUERIES)
    settings = Settings(
        database_url=wis2l_database_url,
        migrations=(MigrationSource(name="playtest", path=migrations),),
        queries=(queries,),
    )
    import asyncio

    asyncio.run(apply_migrations(wis2l_database_url, sources=settings.migrations))
    return App(settings, queries, tmp_path / "generated")


def describe(app: App) -> dict[str, Any]:
    ((_, described, _),) = describe_files(app.settings.database_url, read_folders([app.queries]))
    return {d.query.name: d for d in described}


def columns(app: App, name: str) -> dict[str, tuple[str, bool]]:
    return {c.name: (c.type, c.optional) for c in describe(app)[name].columns}


# -- types and nullability ---------------------------------------------------------------


def test_table_columns_take_their_types_and_not_null(app: App) -> None:
    assert columns(app, "find_note") == {
        "id": ("uuid.UUID", False),
        "build_id": ("uuid.UUID", True),
        "body": ("str", False),
        "mood": ("Mood", False),
        "score": ("decimal.Decimal", True),
        "tags": ("list[str]", False),
        "extra": ("typed.JSON", False),
        "seen_on": ("datetime.date", True),
        "at": ("datetime.time", True),
        "blob": ("bytes", True),
        "ratio": ("float", True),
        "done": ("bool", False),
        "created_at": ("datetime.datetime", False),
    }
    # RETURNING columns come from the table too.
    assert columns(app, "add_note")["body"] == ("str", False)


def test_the_nullable_side_of_an_outer_join_is_optional(app: App) -> None:
    assert columns(app, "with_reactions") == {
        "id": ("uuid.UUID", False),
        "body": ("str", False),
        "emoji": ("str", True),
        "reaction_id": ("uuid.UUID", True),
    }
    assert columns(app, "reactions_right") == {"body": ("str", True), "emoji": ("str", False)}
    assert columns(app, "reactions_full") == {"body": ("str", True), "emoji": ("str", True)}
    assert columns(app, "reactions_inner") == {"body": ("str", False), "emoji": ("str", False)}


def test_expressions_are_optional_unless_the_alias_says_otherwise(app: App) -> None:
    assert columns(app, "stats") == {
        "total": ("int", True),
        "counted": ("int", False),
        "shout": ("str", True),
        "any_body": ("str", True),
    }


def test_params_are_typed_from_their_casts_and_optional_when_null_is_allowed(app: App) -> None:
    described = describe(app)
    add = {p.name: (p.type, p.optional) for p in described["add_note"].params}
    assert add == {
        "body": ("str", False),
        "mood": ("Mood", False),
        "score": ("decimal.Decimal", True),  # into a nullable column
        "tags": ("list[str]", False),
        "extra": ("typed.JSON", False),
        "build_id": ("uuid.UUID", True),
    }
    rescore = {p.name: (p.type, p.optional) for p in described["rescore"].params}
    assert rescore == {
        "score": ("decimal.Decimal", True),
        "body": ("str", False),
        "id": ("uuid.UUID", False),
    }
    page = {p.name: (p.type, p.optional) for p in described["by_build"].params}
    assert page == {"build_id": ("uuid.UUID", True)}  # after/limit belong to the page


def test_a_type_it_does_not_map_is_refused_by_name(app: App) -> None:
    (app.queries / "playtest.sql").write_text("-- name: where\nSELECT point(1, 2) AS p;\n")
    with pytest.raises(GenerateError) as info:
        describe(app)
    assert info.value.lines == (
        f"{app.queries / 'playtest.sql'}:1 where: column p has the type point, which the"
        " generator does not map: cast it (e.g. ::text)",
    )


def test_queries_it_cannot_write_are_refused_each_on_its_line(app: App) -> None:
    (app.queries / "playtest.sql").write_text(
        '-- name: typed\nSELECT 1 AS "x!";\n\n'
        "-- name: listing :page\nSELECT id FROM notes ORDER BY id;\n\n"
        '-- name: pair\nSELECT 1 AS "a!", 2 AS "a!";\n\n'
        "-- name: nothing :one\nDELETE FROM reactions WHERE id = %(id)s::uuid;\n"
    )
    with pytest.raises(GenerateError) as info:
        describe(app)
    where = app.queries / "playtest.sql"
    assert info.value.lines == (
        f"{where}:1 typed: the name 'typed' is taken in the module: rename the query",
        f"{where}:4 listing: :page takes %(after)s::uuid and %(limit)s::int",
        f"{where}:7 pair: two columns are named 'a': alias one",
        f"{where}:10 nothing: returns no rows, so it cannot be :one: use :exec",
    )


def test_an_unknown_shape_is_refused_with_its_line() -> None:
    with pytest.raises(ValueError, match=r"x.sql:2: 'find' ends with :single"):
        parse_queries("x", "\n-- name: find :single\nSELECT 1")


# -- the generated module at run time ----------------------------------------------------


@pytest.fixture
def module(app: App) -> ModuleType:
    write_modules(app.out, describe_files(app.settings.database_url, read_folders([app.queries])))
    return load(app.out / "playtest.py")


async def test_each_shape_on_the_pool_and_in_a_transaction(
    app: App, module: ModuleType, wis: Wis2l
) -> None:
    mod = module
    note = await mod.add_note(
        wis.database,
        body="too hard",
        mood=mod.Mood.TILTED,
        score=decimal.Decimal("4.50"),
        tags=["boss", "jump"],
        extra={"level": 3},
        build_id=None,
    )
    assert isinstance(note, mod.AddNoteRow)
    assert note.mood is mod.Mood.TILTED  # a StrEnum member, not a str
    assert note.score == decimal.Decimal("4.50")
    assert note.tags == ["boss", "jump"]
    assert note.extra == {"level": 3}
    assert note.created_at.tzinfo is not None  # timestamptz: aware
    assert await mod.add_reaction(wis.database, note_id=note.id, emoji="fire") == 1

    found = await mod.find_note(wis.database, id=note.id)
    assert found is not None
    assert (found.body, found.seen_on) == ("too hard", None)
    assert await mod.find_note(wis.database, id=uuid.uuid4()) is None
    rows = await mod.with_reactions(wis.database, mood=mod.Mood.TILTED)
    assert [(r.body, r.emoji) for r in rows] == [("too hard", "fire")]
    stats = await mod.stats(wis.database)
    assert (stats.total, stats.counted) == (1, 1)

    async with wis.transaction() as tx:
        inside = await mod.add_note(
            tx, body="t", mood=mod.Mood.ON_FIRE, score=None, tags=[], extra=[], build_id=None
        )
        assert inside is not None
        assert await mod.calm_down(tx, mood=mod.Mood.ON_FIRE) == 1
        assert (await mod.find_note(tx, id=inside.id)).mood is mod.Mood.CALM
    assert await mod.find_note(wis.database, id=inside.id) is not None  # committed

    added = []

    async def add_then_fail() -> None:
        async with wis.transaction() as tx:
            added.append(
                await mod.add_note(
                    tx, body="g", mood=mod.Mood.CALM, score=None, tags=[], extra={}, build_id=None
                )
            )
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        await add_then_fail()
    assert await mod.find_note(wis.database, id=added[0].id) is None  # rolled back


async def test_a_page_carries_signed_cursors(app: App, module: ModuleType, wis: Wis2l) -> None:
    mod = module
    for i in range(5):
        await mod.add_note(
            wis.database, body=str(i), mood="calm", score=None, tags=[], extra={}, build_id=None
        )
    first = await mod.by_build(wis.database, build_id=None, limit=2)
    assert len(first.items) == 2
    seen = list(first.items)
    after = first.next_cursor
    while after is not None:
        page = await mod.by_build(wis.database, build_id=None, limit=2, after=after)
        seen += page.items
        after = page.next_cursor
    # The same cursors as wis.database.page on the same query.
    same = await wis.database.page(
        mod._BY_BUILD, {"build_id": None}, limit=2, after=first.next_cursor
    )
    assert [row["id"] for row in same] == [r.id for r in seen[2:4]]
    assert [r.id for r in seen] == sorted(r.id for r in seen)
    assert sorted(r.body for r in seen) == ["0", "1", "2", "3", "4"]
    cursor = first.next_cursor
    assert cursor is not None
    tampered = cursor[:-2] + ("BB" if cursor.endswith("AA") else "AA")
    with pytest.raises(ValidationError, match="cursor"):
        await mod.by_build(wis.database, build_id=None, after=tampered)


# -- the command -------------------------------------------------------------------------


def env(monkeypatch: pytest.MonkeyPatch, app: App) -> None:
    monkeypatch.setenv("DATABASE_URL", app.settings.database_url)
    monkeypatch.setenv("WIS2L_MIGRATIONS", f"playtest={app.settings.migrations[0].path}")
    monkeypatch.setenv("WIS2L_QUERIES", str(app.queries))


def test_check_names_each_stale_file_and_db_check_fails_on_them(
    app: App, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env(monkeypatch, app)
    out = str(app.out)
    assert main(["db", "generate", "--out", out, "--check"]) == 1
    assert f"stale {app.out / 'playtest.py'}" in capsys.readouterr().out
    assert main(["db", "generate", "--out", out]) == 0
    assert "typed 11 queries: 1 module(s) written" in capsys.readouterr().out
    assert main(["db", "generate", "--out", out, "--check"]) == 0

    monkeypatch.setenv("WIS2L_GENERATED", out)
    assert main(["db", "check"]) == 0
    capsys.readouterr()
    with (app.queries / "playtest.sql").open("a") as f:
        f.write('\n-- name: count_notes :one\nSELECT count(*) AS "n!" FROM notes;\n')
    assert main(["db", "check"]) == 1
    assert f"stale {app.out / 'playtest.py'}: run `wis2l db generate`" in capsys.readouterr().out
    assert main(["db", "generate", "--out", out, "--check"]) == 1
    # A generated module whose .sql file is gone is stale too.
    old = (app.out / "playtest.py").read_text().replace("playtest.sql", "old.sql")
    (app.out / "old.py").write_text(old)
    (app.out / "__init__.py").write_text('"""Written by ``wis2l db generate``; kept."""\n')
    assert main(["db", "generate", "--out", out]) == 0
    assert not (app.out / "old.py").exists()
    assert (app.out / "__init__.py").exists()  # not a generated module: left alone


def test_a_query_that_does_not_prepare_is_one_line_and_exit_1(
    app: App, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env(monkeypatch, app)
    (app.queries / "playtest.sql").write_text(
        '-- name: fine\nSELECT 1 AS "one!";\n\n'
        "-- name: broken\nSELECT id,\n       bogus\nFROM notes;\n"
    )
    assert main(["db", "generate", "--out", str(app.out)]) == 1
    err = capsys.readouterr().err
    assert err == f'{app.queries / "playtest.sql"}:6 broken: column "bogus" does not exist\n'
    assert not app.out.exists()  # nothing half-written


def test_pending_migrations_are_refused(
    app: App, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env(monkeypatch, app)
    (app.settings.migrations[0].path / "0002_more.sql").write_text("CREATE TABLE more (x int);")
    assert main(["db", "generate", "--out", str(app.out)]) == 1
    assert "1 pending" in capsys.readouterr().err


@pytest.mark.slow
def test_zero_setup_uses_an_embedded_database(
    app: App, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env(monkeypatch, app)
    for name in ("DATABASE_URL", "DATABASE_HOST", "DATABASE_DIRECT_URL"):
        monkeypatch.delenv(name, raising=False)
    assert main(["db", "generate", "--out", str(app.out)]) == 0
    assert "typed 11 queries" in capsys.readouterr().out
    module = load(app.out / "playtest.py")
    # The embedded server's plans give the same answers as the test server's.
    fields = {f.name: f.type for f in attrs.fields(module.WithReactionsRow)}
    assert fields == {
        "id": uuid.UUID,
        "body": str,
        "emoji": str | None,
        "reaction_id": uuid.UUID | None,
    }


# -- the code is typed and tidy ----------------------------------------------------------

USAGE = """\
import uuid

from wis2l_core import Wis2l
from generated import playtest, projects


async def use(wis: Wis2l) -> None:
    note = await playtest.find_note(wis.database, id=uuid.uuid4())
    if note is not None:
        body: str = note.body
        mood: playtest.Mood = note.mood
        score: str = note.score  # ERROR-score
        print(body, mood, score)
    async with wis.transaction() as tx:
        page = await projects.find_all(tx, after=uuid.uuid4(), limit=3)
        print(page)
    await playtest.find_note(wis.database, id="not a uuid")  # ERROR-id
    await playtest.calm_down(wis.database, mood=playtest.Mood.CALM)
"""


def test_generated_code_passes_mypy_strict_and_ruff(app: App, tmp_path: Path) -> None:
    """The library's own 60-odd queries and the app's, type-checked with a usage file: the
    right calls pass, a wrong parameter type and a wrong attribute type are errors."""
    out = tmp_path / "check" / "generated"
    files = read_folders([sql_root() / "queries", app.queries])
    write_modules(out, describe_files(app.settings.database_url, files), line_length=100)
    (out / "__init__.py").write_text("")
    (tmp_path / "check" / "usage.py").write_text(USAGE)
    stdout, _, status = mypy_api.run(
        [
            "--strict",
            "--no-incremental",
            "--cache-dir=/dev/null",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            str(tmp_path / "check"),
        ]
    )
    errors = [line for line in stdout.splitlines() if ": error:" in line]
    assert all("usage.py" in line for line in errors), stdout
    lines = {int(line.split(":")[1]) for line in errors}
    marked = {n for n, text in enumerate(USAGE.splitlines(), 1) if "# ERROR-" in text}
    assert lines == marked, stdout
    assert status == 1

    ruff = [str(VENV_BIN / "ruff")]
    config = ["--config", str(ROOT / "pyproject.toml")]
    check = subprocess.run(
        [*ruff, "check", *config, str(out)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout
    fmt = subprocess.run(
        [*ruff, "format", "--check", *config, str(out)], capture_output=True, text=True, check=False
    )
    assert fmt.returncode == 0, fmt.stdout
    assert "type: ignore" not in "".join(p.read_text() for p in out.glob("*.py"))


def test_the_examples_generated_module_is_current(
    wis2l_database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """examples/playtest_db is what `wis2l db generate` writes for examples/own_tables."""
    examples = ROOT / "examples"
    monkeypatch.setenv("DATABASE_URL", wis2l_database_url)
    monkeypatch.setenv("WIS2L_MIGRATIONS", f"own_tables={examples / 'own_tables' / 'migrations'}")
    monkeypatch.setenv("WIS2L_QUERIES", str(examples / "own_tables" / "queries"))
    assert main(["db", "migrate"]) == 0
    out = str(examples / "playtest_db")
    assert main(["db", "generate", "--out", out, "--line-length", "100", "--check"]) == 0
    assert capsys.readouterr().out.endswith("typed 3 queries: 0 module(s) stale\n")


# -- wis2l db check --lint ----------------------------------------------------------------

LINTED = """\
-- name: wipe :exec
DELETE FROM reactions;

-- name: by_emoji
SELECT id FROM reactions WHERE emoji = %(emoji)s::text;

-- name: by_body :page
SELECT id, body FROM notes WHERE id > %(after)s::uuid ORDER BY body, id LIMIT %(limit)s::int;

-- name: by_id :page
SELECT id, body FROM notes WHERE id > %(after)s::uuid ORDER BY id LIMIT %(limit)s::int;

-- name: touch :exec
UPDATE notes SET done = true WHERE id = %(id)s::uuid;
"""


def test_lint_reports_unbounded_writes_unserved_keysets_and_large_seq_scans(
    app: App, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import psycopg

    env(monkeypatch, app)
    (app.queries / "playtest.sql").write_text(LINTED)
    with psycopg.connect(app.settings.database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO notes (body, mood) VALUES ('n', 'calm')")
        conn.execute(
            "INSERT INTO reactions (note_id, emoji) SELECT id, 'x' || g FROM notes,"
            " generate_series(1, 3000) AS g"
        )
        conn.execute("ANALYZE notes; ANALYZE reactions")
    assert main(["db", "check"]) == 0  # without --lint: all prepare
    capsys.readouterr()
    assert main(["db", "check", "--lint", "--lint-seq-scan-rows", "1000"]) == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if "lint:" in line]
    where = f"{app.queries}/playtest.sql"
    assert lines == [
        f"{where}:1: wipe: lint: DELETE without WHERE touches every row",
        f"{where}:1: wipe: lint: sequential scan of public.reactions (about 3000 rows,"
        " above 1000): no index serves the query",
        f"{where}:4: by_emoji: lint: sequential scan of public.reactions (about 3000 rows,"
        " above 1000): no index serves the query",
        f"{where}:7: by_body: lint: keyset ORDER BY that no index serves (the plan sorts)",
    ]
