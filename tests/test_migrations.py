"""The migration runner: concurrent deploys, drift, failing files, the lock timeout."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from wis2l_core.cli import main
from wis2l_core.db.locks import MIGRATIONS as LOCK_KEY
from wis2l_core.db.migrate import apply_migrations, migration_status
from wis2l_core.db.sql import migrations, sql_root
from wis2l_core.errors import MigrationError, ServiceUnavailable

FILES = [m.name for m in migrations()]


def recorded(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return [
            (str(n), str(c))
            for n, c in conn.execute("SELECT name, checksum FROM wis2l_migrations ORDER BY name")
        ]


def table_exists(url: str, table: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
        return bool(row and row[0])


@pytest.mark.slow
async def test_three_concurrent_migrate_processes_apply_each_file_once(
    empty_database_url: str,
) -> None:
    async def one() -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "wis2l_core.cli",
            "db",
            "migrate",
            "--database-url",
            empty_database_url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    results = await asyncio.gather(one(), one(), one())
    assert [code for code, _, _ in results] == [0, 0, 0], results
    assert all(err == "" for _, _, err in results), results
    applied = [
        line.split()[1]
        for _, out, _ in results
        for line in out.splitlines()
        if line.startswith("applied ")
    ]
    assert sorted(applied) == sorted(FILES)  # each file applied by exactly one process
    assert sum("nothing to apply" in out for _, out, _ in results) >= 1
    assert [name for name, _ in recorded(empty_database_url)] == FILES
    assert [c for _, c in recorded(empty_database_url)] == [m.checksum for m in migrations()]


async def test_status_of_a_fresh_database(
    empty_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = await migration_status(empty_database_url)
    assert (status.applied, status.pending, status.drifted) == ((), tuple(FILES), ())
    assert (
        await asyncio.to_thread(main, ["db", "status", "--database-url", empty_database_url]) == 0
    )
    assert (
        await asyncio.to_thread(
            main, ["db", "status", "--fail-on-pending", "--database-url", empty_database_url]
        )
        == 1
    )
    out = capsys.readouterr().out
    assert f"pending  {FILES[0]}" in out
    assert f"0 applied, {len(FILES)} pending, 0 drifted" in out
    assert await apply_migrations(empty_database_url) == FILES
    assert await apply_migrations(empty_database_url) == []
    status = await migration_status(empty_database_url)
    assert (status.applied, status.pending, status.ok) == (tuple(FILES), (), True)


async def test_drifted_migration_stops_everything(
    wis2l_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    name = FILES[0]
    with psycopg.connect(wis2l_database_url) as conn:
        conn.execute("UPDATE wis2l_migrations SET checksum = 'edited' WHERE name = %s", (name,))
    with pytest.raises(MigrationError) as info:
        await apply_migrations(wis2l_database_url)
    assert info.value.migration == name
    assert name in str(info.value)

    args = ["--database-url", wis2l_database_url]
    assert await asyncio.to_thread(main, ["db", "migrate", *args]) == 1
    captured = capsys.readouterr()
    assert name in captured.err
    assert "Traceback" not in captured.err
    assert await asyncio.to_thread(main, ["db", "status", *args]) == 1
    captured = capsys.readouterr()
    assert f"drifted  {name}" in captured.out
    assert "1 drifted" in captured.out
    assert name in captured.err
    status = await migration_status(wis2l_database_url)
    assert status.drifted == (name,)
    assert not status.ok


async def test_failing_migration_rolls_back_and_is_not_recorded(
    wis2l_database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for path in (sql_root() / "migrations").glob("*.sql"):
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "0900_half_done.sql").write_text(
        "CREATE TABLE half_done (id int);\nSELECT no_such_column FROM users;\n"
    )
    (tmp_path / "0901_after.sql").write_text("CREATE TABLE after_bad (id int);\n")
    before = recorded(wis2l_database_url)

    with pytest.raises(MigrationError) as info:
        await apply_migrations(wis2l_database_url, directory=tmp_path)
    assert info.value.migration == "0900_half_done"
    assert "no_such_column" in str(info.value)
    assert not table_exists(wis2l_database_url, "half_done")  # its transaction rolled back
    assert not table_exists(wis2l_database_url, "after_bad")  # later files never ran
    assert recorded(wis2l_database_url) == before

    code = await asyncio.to_thread(
        main,
        ["db", "migrate", "--database-url", wis2l_database_url, "--migrations-dir", str(tmp_path)],
    )
    assert code == 1
    assert "0900_half_done" in capsys.readouterr().err
    status = await migration_status(wis2l_database_url, directory=tmp_path)
    assert status.pending == ("0900_half_done", "0901_after")


async def test_lock_held_too_long_is_service_unavailable(
    wis2l_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(wis2l_database_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        with pytest.raises(ServiceUnavailable, match="lock"):
            await apply_migrations(wis2l_database_url, lock_timeout=0.3)
        env = {**os.environ, "WIS2L_MIGRATE_LOCK_TIMEOUT": "0.3"}
        proc = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "wis2l_core.cli",
                "db",
                "migrate",
                "--database-url",
                wis2l_database_url,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 3, proc
        assert proc.stderr.count("\n") == 1
        assert "lock" in proc.stderr
