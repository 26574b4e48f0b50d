"""``wis2l db ...``: exit codes, one-line errors, the default URL, and the idempotent seed."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from wis2l_core.cli import main
from wis2l_core.db.sql import migrations
from wis2l_core.dev.seed import HISTORY_DAYS, PROJECTS, TEMPLATES, USERS

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/nowhere"
TABLES = ("users", "templates", "projects", "components", "design_tokens", "builds", "deployments")


def snapshot(url: str) -> dict[str, object]:
    """Row counts and the newest updated_at of every table, and the event count."""
    found: dict[str, object] = {}
    with psycopg.connect(url) as conn:
        for table in (*TABLES, "events"):
            query = sql.SQL("SELECT count(*), max(updated_at) FROM {}").format(
                sql.Identifier(table)
            )
            found[table] = conn.execute(query).fetchone()
    return found


def column(url: str, query: str) -> list[Any]:
    return [row[0] for row in rows_of(url, query)]


def rows_of(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query.encode()).fetchall()


def help_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main([*argv, "--help"])
    assert info.value.code == 0
    return capsys.readouterr().out


def test_db_help_has_the_whole_exit_code_table(capsys: pytest.CaptureFixture[str]) -> None:
    out = help_of(["db"], capsys)
    assert "exit codes:" in out
    assert "3  the database cannot be reached" in out
    for command in ("migrate", "status", "new", "seed", "check", "prune"):
        assert f"     {command} " in out


@pytest.mark.parametrize("command", ["migrate", "status", "new", "seed", "check", "prune"])
def test_each_command_lists_only_its_own_exits(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = help_of(["db", command], capsys)
    codes = out[out.index("exit codes") :]
    assert "wis2l db --help" in codes
    assert "the command found a problem" not in codes  # not the whole table
    others = {"migrate", "status", "new", "seed", "check", "prune"} - {command}
    assert not [name for name in others if f" {name} " in codes]
    assert ("3  the database cannot be reached" in codes) == (command != "new")


def test_db_needs_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["db"])
    assert info.value.code == 2
    assert "migrate" in capsys.readouterr().err


def test_migrate_when_up_to_date(
    wis2l_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "migrate", "--database-url", wis2l_database_url]) == 0
    assert "nothing to apply" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["migrate", "status", "seed", "check"])
def test_unreachable_database_is_one_line_and_exit_3(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", command, "--database-url", UNREACHABLE]) == 3
    err = capsys.readouterr().err
    assert err.startswith(f"wis2l db {command}: error: database unavailable")
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_malformed_url_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "status", "--database-url", "mysql://db/x"]) == 2
    err = capsys.readouterr().err
    assert "--database-url" in err
    assert err.count("\n") == 1


def test_malformed_environment_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://db/x")
    assert main(["db", "status"]) == 2
    assert "DATABASE_URL" in capsys.readouterr().err


def test_default_url_comes_from_the_environment(
    wis2l_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", wis2l_database_url)
    assert main(["db", "status", "--fail-on-pending"]) == 0
    assert f"{len(migrations())} applied, 0 pending, 0 drifted" in capsys.readouterr().out


def test_seed_refuses_an_unmigrated_database(
    empty_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "seed", "--database-url", empty_database_url]) == 1
    assert "wis2l db migrate" in capsys.readouterr().err
    assert column(empty_database_url, "SELECT to_regclass('users')") == [None]


def test_seed_loads_sample_data_once(
    wis2l_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = wis2l_database_url
    assert main(["db", "seed", "--database-url", url]) == 0
    out = capsys.readouterr().out
    assert f"users: {len(USERS)} created, 0 already there" in out
    assert f"projects: {len(PROJECTS)} created, 0 already there" in out

    assert sorted(column(url, "SELECT role FROM users")) == ["admin", "developer", "viewer"]
    engines = set(column(url, "SELECT engine FROM templates"))
    assert {"unity", "godot", "pico8", "web"} <= engines
    assert len(engines) == len(TEMPLATES)
    assert set(column(url, "SELECT status FROM builds")) == {
        "pending",
        "building",
        "completed",
        "failed",
    }
    assert set(column(url, "SELECT status FROM deployments")) == {
        "pending",
        "in_progress",
        "completed",
        "failed",
    }
    assert column(url, "SELECT progress FROM builds WHERE status = 'completed' LIMIT 1") == [100]
    assert all(
        n > 0
        for n in column(
            url,
            "SELECT count(*) FROM components UNION ALL SELECT count(*) FROM design_tokens "
            "UNION ALL SELECT count(*) FROM projects WHERE template_id IS NOT NULL",
        )
    )
    event_types = set(column(url, "SELECT type FROM events"))
    assert {"build.started", "build.completed", "deployment.completed"} <= event_types
    first = snapshot(url)

    assert main(["db", "seed", "--database-url", url]) == 0
    out = capsys.readouterr().out
    assert f"users: 0 created, {len(USERS)} already there" in out
    assert "builds: 0 created" in out
    assert snapshot(url) == first  # nothing written, not even an event


def test_seed_places_a_history_in_the_past(wis2l_database_url: str) -> None:
    url = wis2l_database_url
    assert main(["db", "seed", "--database-url", url]) == 0
    now = column(url, "SELECT now()")[0].astimezone(UTC)
    start = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(HISTORY_DAYS)

    # builds on every engine, both outcomes, over every past day, with engine-like times
    rows = {
        (engine, status): (n, median)
        for engine, status, n, median in rows_of(
            url,
            "SELECT p.engine, b.status, count(*), percentile_cont(0.5) WITHIN GROUP "
            "(ORDER BY extract(epoch FROM b.finished_at - b.started_at)) "
            "FROM builds b JOIN projects p ON p.id = b.project_id "
            "WHERE b.status IN ('completed', 'failed') GROUP BY 1, 2",
        )
    }
    engines = {engine for engine, _ in rows}
    assert engines == {spec["engine"] for spec in PROJECTS}
    assert len(engines) >= 5
    assert all(rows[engine, "completed"][0] >= 5 for engine in engines)
    assert sum(n for (_, status), (n, _) in rows.items() if status == "failed") >= 5
    # builds fail early and late, at the progress they reached
    ((low, high),) = rows_of(
        url, "SELECT min(progress), max(progress) FROM builds WHERE status = 'failed'"
    )
    assert low < 30
    assert high > 70
    median = {engine: rows[engine, "completed"][1] for engine in engines}
    assert median["pico8"] < 30 < median["web"] < 5 * 60 < median["unity"] < median["unreal"]
    assert column(
        url,
        "SELECT count(DISTINCT date_trunc('day', created_at, 'UTC')) FROM builds "
        "WHERE created_at < date_trunc('day', now(), 'UTC')",
    ) == [HISTORY_DAYS]
    # every timestamp in order, in the past, and the time-ordered ids follow the history
    assert column(
        url,
        "SELECT count(*) FROM builds WHERE NOT (created_at <= coalesce(started_at, created_at) "
        "AND coalesce(started_at, created_at) < coalesce(finished_at, now()) "
        "AND coalesce(finished_at, started_at, created_at) = updated_at AND updated_at < now())",
    ) == [0]
    assert column(url, "SELECT min(created_at) FROM builds")[0] >= start
    created = column(url, "SELECT created_at FROM builds ORDER BY id")
    assert created == sorted(created)
    assert column(url, "SELECT max(created_at) FROM projects")[0] < created[0]

    # deployments: staging more often than production, most complete, some fail
    deployments = dict(
        rows_of(
            url,
            "SELECT environment || '/' || status, count(*) FROM deployments "
            "WHERE created_at < date_trunc('day', now(), 'UTC') GROUP BY 1",
        )
    )
    staging = deployments["staging/completed"] + deployments.get("staging/failed", 0)
    production = deployments["production/completed"] + deployments.get("production/failed", 0)
    assert staging > 2 * production > 0
    assert deployments.get("staging/failed", 0) + deployments.get("production/failed", 0) > 0
    assert set(deployments) <= {
        f"{e}/{s}" for e in ("staging", "production") for s in ("completed", "failed")
    }  # history is finished
    assert (
        column(
            url,
            "SELECT count(DISTINCT date_trunc('day', created_at, 'UTC')) FROM deployments "
            "WHERE created_at < date_trunc('day', now(), 'UTC')",
        )[0]
        >= HISTORY_DAYS - 2
    )
    # production deploys a version staging took before
    assert column(
        url,
        "SELECT count(*) FROM deployments p WHERE p.environment = 'production' AND NOT EXISTS "
        "(SELECT 1 FROM deployments s WHERE s.project_id = p.project_id "
        "AND s.environment = 'staging' AND s.status = 'completed' AND s.version = p.version "
        "AND s.updated_at <= p.created_at)",
    ) == [0]

    # each status event carries the time of its change, in the row and in the payload
    assert column(
        url,
        "SELECT count(*) FROM events e JOIN builds b ON b.id = (e.payload->>'build_id')::uuid "
        "WHERE e.type IN ('build.completed', 'build.failed') AND NOT (e.created_at = "
        "b.finished_at AND (e.payload->>'occurred_at')::timestamptz = b.finished_at)",
    ) == [0]
    assert column(
        url,
        "SELECT count(*) FROM events e JOIN deployments d "
        "ON d.id = (e.payload->>'deployment_id')::uuid "
        "WHERE e.type = 'deployment.started' AND NOT e.created_at BETWEEN d.created_at "
        "AND d.updated_at",
    ) == [0]


@pytest.mark.slow
def test_concurrent_seeds_do_not_collide(wis2l_database_url: str) -> None:
    argv = [sys.executable, "-m", "wis2l_core.cli", "db", "seed"]
    procs = [
        subprocess.Popen(
            [*argv, "--database-url", wis2l_database_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [(p.wait(timeout=60), *p.communicate()) for p in procs]
    assert [code for code, _, _ in results] == [0, 0], results
    created = [
        line for _, out, _ in results for line in out.splitlines() if line.startswith("users:")
    ]
    assert sorted(created) == [
        f"users: 0 created, {len(USERS)} already there",
        f"users: {len(USERS)} created, 0 already there",
    ]
    assert len(column(wis2l_database_url, "SELECT id FROM projects")) == len(PROJECTS)


def test_check_on_an_unmigrated_database_is_one_line_naming_migrate(
    empty_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "check", "--database-url", empty_database_url]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # not one failure per query
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("wis2l db check: error: the database schema is missing")
    assert "`wis2l db migrate`" in captured.err


@pytest.mark.parametrize("make", ["missing", "empty", "not-sql"])
def test_check_refuses_a_queries_dir_with_nothing_to_check(
    make: str,
    wis2l_database_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    queries = tmp_path / "queries"
    if make != "missing":
        queries.mkdir()
    if make == "not-sql":
        (queries / "users.txt").write_text("-- name: x\nSELECT 1\n")
    argv = ["db", "check", "--database-url", wis2l_database_url, "--queries-dir", str(queries)]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "checked 0 queries" not in captured.out
    assert captured.err.count("\n") == 1
    assert captured.err.startswith(f"wis2l db check: error: --queries-dir {queries}: ")
    assert ("no such folder" if make == "missing" else "no .sql files") in captured.err
