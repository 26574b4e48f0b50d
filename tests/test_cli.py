"""The ``wis2l`` command itself: ``--version``, and ``wis2l dev``'s migration step."""

from __future__ import annotations

import socket
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import psycopg
import pytest

from wis2l_core.cli import dev, main

SRC = Path(__file__).resolve().parents[1] / "src"


def test_version_flag_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"wis2l-core {version('wis2l-core')}\n"


def test_version_flag_from_the_command_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "wis2l_core.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wis2l-core {version('wis2l-core')}"


def test_dev_migrate_says_when_the_schema_is_up_to_date(
    wis2l_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert dev._migrate(wis2l_database_url, migrate=True) is True  # a migrated clone
    assert capsys.readouterr().err == "schema up to date: no migration to apply\n"


def test_dev_migrate_applies_and_names_the_migrations(
    wis2l_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(wis2l_database_url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
        conn.execute("DROP TABLE IF EXISTS wis2l_migrations")
    assert dev._migrate(wis2l_database_url, migrate=True) is True
    err = capsys.readouterr().err
    assert err.startswith("applied ")
    assert "0001_" in err
    with psycopg.connect(wis2l_database_url) as conn:
        assert conn.execute("SELECT to_regclass('public.users')").fetchone() != (None,)


def test_dev_no_migrate_says_how_to_migrate(capsys: pytest.CaptureFixture[str]) -> None:
    assert dev._migrate("postgresql://nobody@127.0.0.1:1/none", migrate=False) is True
    assert "wis2l db migrate" in capsys.readouterr().err


def test_dev_migrate_failure_is_one_line_and_false(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert dev._migrate(f"postgresql://postgres@127.0.0.1:{port}/x", migrate=False) is True
    capsys.readouterr()
    assert dev._migrate(f"postgresql://postgres@127.0.0.1:{port}/x", migrate=True) is False
    err = capsys.readouterr().err
    assert err.startswith("wis2l dev: the migrations failed:")
    assert err.count("\n") == 1
