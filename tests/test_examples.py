"""The example scripts run end to end against real servers and print what they promise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from wis2l_core.testing.servers import Servers

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, servers: Servers, database_url: str, namespace: str) -> str:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": servers.redis_url,
        "NATS_URL": servers.nats_url,
        "WIS2L_NAMESPACE": namespace,
        "WIS2L_STREAM": namespace.upper(),
    }
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
def test_quickstart_runs_the_whole_flow(
    wis2l_servers: Servers, wis2l_database_url: str, request: pytest.FixtureRequest
) -> None:
    out = run_example(
        "quickstart.py", wis2l_servers, wis2l_database_url, "qs" + os.urandom(4).hex()
    )
    assert "health     ok (database up" in out
    for line in ("user ", "project ", "component ", "build ", "deployment ", "events "):
        assert any(row.startswith(line) for row in out.splitlines()), (line, out)
    assert "PlayerController v2" in out
    assert "html5: completed 100%" in out
    assert "component.created" in out
    assert "deployment.completed" in out
    received = [row for row in out.splitlines() if row.startswith("received")]
    assert sorted(r.split()[1].split(".", 1)[1] for r in received) == [
        "build.completed",
        "deployment.completed",
    ]
