"""The built wheel carries every module, the SQL files, the type marker and the plugin."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_ships_sql_files(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("wis2l_core-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected_sql = {
        f"wis2l_core/sql/{p.relative_to(ROOT / 'sql').as_posix()}"
        for p in (ROOT / "sql").rglob("*.sql")
    }
    assert expected_sql, "no .sql files in the checkout"
    assert expected_sql <= names, sorted(expected_sql - names)
    assert "wis2l_core/py.typed" in names
    package = ROOT / "src" / "wis2l_core"
    modules = {f"wis2l_core/{p.relative_to(package).as_posix()}" for p in package.rglob("*.py")}
    assert "wis2l_core/health/__init__.py" in modules  # a package since the split
    assert modules <= names, sorted(modules - names)
    meta = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    entry_points = zipfile.ZipFile(wheel).read(meta).decode()
    assert "pytest11" in entry_points
    assert "wis2l = wis2l_core.cli:main" in entry_points
