"""The example scripts run end to end against real servers and print what they promise."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from wis2l_core.testing.servers import Servers

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def example_env(servers: Servers, database_url: str, namespace: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": servers.redis_url,
        "NATS_URL": servers.nats_url,
        "WIS2L_NAMESPACE": namespace,
        "WIS2L_STREAM": namespace.upper(),
    }


def run_example(name: str, servers: Servers, database_url: str, namespace: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        env=example_env(servers, database_url, namespace),
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


@pytest.mark.slow
def test_own_tables_migrates_the_app_folder_and_pages_its_rows(
    wis2l_servers: Servers, wis2l_database_url: str
) -> None:
    out = run_example(
        "own_tables.py", wis2l_servers, wis2l_database_url, "ot" + os.urandom(4).hex()
    )
    lines = out.splitlines()
    assert "note     4/5 'fun' on build html5" in lines
    assert "pages    [2, 2, 1]" in lines
    assert "bodies   ['again!', 'crashed', 'fun', 'great', 'too dark']" in lines
    assert "rating   {'notes': 5, 'average': 3.8}" in lines
    assert "migrated ['own_tables/0001_playtest_notes']" in lines
    # `wis2l db check` prepares the example's query file against that database.
    done = subprocess.run(
        [sys.executable, "-m", "wis2l_core.cli", "db", "check"],
        env={
            **example_env(wis2l_servers, wis2l_database_url, "ot"),
            "WIS2L_QUERIES": str(EXAMPLES / "own_tables" / "queries"),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].endswith(": 0 failed")


@pytest.mark.slow
def test_build_worker_is_watched_by_a_second_process(
    wis2l_servers: Servers, wis2l_database_url: str
) -> None:
    out = run_example(
        "build_worker.py", wis2l_servers, wis2l_database_url, "bw" + os.urandom(4).hex()
    )
    lines = out.splitlines()
    assert "queued  3 builds: linux, windows, web" in lines
    assert "worker  took 3 pending builds" in lines
    builds = dict(re.findall(r"^worker  ([0-9a-f]{8}) (\w+): building$", out, re.M))
    assert sorted(builds.values()) == ["linux", "web", "windows"]
    watcher = [line.removeprefix("watcher | ") for line in lines if line.startswith("watcher")]
    assert watcher[0] == "watching 3 builds"
    for build, target in builds.items():
        assert f"build.started   {build} {target}" in watcher, (build, out)
        progress = [w for w in watcher if w.startswith(f"build.progress  {build} ")]
        assert sorted(progress) == [f"build.progress  {build} {p}%" for p in (25, 50, 75)]
        assert f"build.completed {build} {target} artifacts=['{target}']" in watcher
        assert f"worker  {build} {target}: completed 100%" in lines
    assert "all 3 builds completed" in watcher
    assert lines[-1] == "worker  completed 3 builds; watcher exited 0"


@pytest.mark.slow
def test_design_tokens_cache_is_invalidated_by_the_subscriber(
    wis2l_servers: Servers, wis2l_database_url: str
) -> None:
    out = run_example(
        "design_tokens.py", wis2l_servers, wis2l_database_url, "dt" + os.urandom(4).hex()
    )
    lines = out.splitlines()
    assert "synced     4 tokens (one TokensSynced event)" in lines
    old, new = "color.primary=#ff6b35 v1", "color.primary=#00c2a8 v2"
    assert f"read 1     4 tokens, {old} (loader calls: 1)" in lines  # a miss
    assert f"read 2     4 tokens, {old} (loader calls: 1)" in lines  # a hit
    assert "updated    color.primary -> #00c2a8 v2 (TokenUpdated)" in lines
    assert any(line.startswith("invalidated by the TokenUpdated subscriber") for line in lines)
    assert f"read 3     4 tokens, {new} (loader calls: 2)" in lines  # fresh after invalidation
    assert f"read 4     4 tokens, {new} (loader calls: 2)" in lines
    assert "colors     color.primary=#00c2a8, color.background=#1a1a2e" in lines


@pytest.mark.slow
def test_deployment_watch_prints_deployments_as_they_happen(
    wis2l_servers: Servers, wis2l_database_url: str
) -> None:
    out = run_example(
        "deployment_watch.py", wis2l_servers, wis2l_database_url, "dw" + os.urandom(4).hex()
    )
    # The output says why a failure may be printed before its start.
    assert "not ordered with each other" in out.splitlines()[0], out
    # event  HH:MM:SS.mmm kind environment version (id) [-> url]
    rows = [line.split() for line in out.splitlines() if line.startswith("event ")]
    assert sorted(row[2:5] for row in rows) == [
        ["completed", "staging", "v1.4.0"],
        ["failed", "production", "v1.4.0"],
        ["started", "production", "v1.4.0"],
        ["started", "staging", "v1.4.0"],
    ]
    completed = next(row for row in rows if row[2] == "completed")
    assert completed[-1].startswith("https://staging.wis2l.example/tide-keeper-")
    # Each event type has its own consumer, so arrival order may differ across types; the
    # printed occurred_at shows each deployment started before it finished.
    for environment in ("staging", "production"):
        happened = {row[2]: row[1] for row in rows if row[3] == environment}
        assert happened["started"] <= happened.pop("completed", happened.get("failed", "")), out
    assert "watched    4 deployment events" in out


def get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.timing
@pytest.mark.slow
def test_health_server_serves_the_probes_and_stops_on_sigint(
    wis2l_servers: Servers, wis2l_database_url: str
) -> None:
    env = example_env(wis2l_servers, wis2l_database_url, "hs" + os.urandom(4).hex())
    with subprocess.Popen(
        [sys.executable, str(EXAMPLES / "health_server.py"), "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        check_health_server(proc)


def check_health_server(proc: subprocess.Popen[str]) -> None:
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        found = threading.Event()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line.rstrip("\n"))
                if line.startswith("serving "):
                    found.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        assert found.wait(60), lines
        url = next(line for line in lines if line.startswith("serving ")).split()[1]
        assert url.startswith("http://127.0.0.1:")

        status, body = get(url + "/health")
        assert status == 200
        assert body["status"] == "ok"
        checks = body["checks"]
        assert isinstance(checks, dict)
        assert {"database", "redis", "nats"} <= set(checks)
        assert all(check["healthy"] for check in checks.values())
        assert get(url + "/health/live")[0] == 200
        status, body = get(url + "/health/ready")
        assert status == 200
        assert body["status"] == "ready"

        started = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""
        reader.join(5)
        assert time.perf_counter() - started < 15
        assert lines[0] == "health     ok at start"
        assert lines[-2:] == ["server stopped; stopping the runtime", "stopped cleanly"]
        assert proc.stderr is not None
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sync_script_serves_requests_in_flask_shape(
    wis2l_servers: Servers, wis2l_database_url: str
) -> None:
    out = run_example(
        "sync_script.py", wis2l_servers, wis2l_database_url, "ss" + os.urandom(4).hex()
    )
    lines = out.splitlines()
    assert "migrations applied: 0" in lines  # the test database is migrated already
    assert "signup     201 session ok" in lines
    assert lines.count("build      201 pending") == 3
    assert any(line.startswith("build      429 {'retry_after'") for line in lines), out
    assert "bad build  422" in lines
    assert "health     200 ok" in lines


def test_sync_command_fails_stale_builds_in_django_shape(
    wis2l_servers: Servers, wis2l_database_url: str
) -> None:
    namespace = "sc" + os.urandom(4).hex()
    out = run_example(
        "sync_command.py",
        wis2l_servers,
        wis2l_database_url,
        namespace,
        "--older-than",
        "0",
        "--seed",
        "3",
        "--dry-run",
    )
    assert out.startswith("3 build(s) pending since before ")
    assert "failed" not in out
    out = run_example(
        "sync_command.py", wis2l_servers, wis2l_database_url, namespace, "--older-than", "0"
    )
    assert out.splitlines()[1:] == ["failed 3 stale build(s)", "health ok"], out
    out = run_example(
        "sync_command.py", wis2l_servers, wis2l_database_url, namespace, "--older-than", "0"
    )
    assert out.startswith("0 build(s) pending")
