"""examples/api_app.py under uvicorn, driven over HTTP with the tokens it prints: role
checks, ownership, rate-limit headers, and the events its writes publish."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from wis2l_core.testing.servers import Servers

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "api_app.py"
EVENTS = {
    "build.started",
    "build.progress",
    "build.completed",
    "token.updated",
    "deployment.started",
    "deployment.completed",
}


class Output:
    """The example's stdout, read by a thread, line by line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._proc = proc
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, done: object, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if callable(done) and done():
                return
            if self._proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"timed out; output so far: {self.lines}")

    def events(self) -> set[str]:
        return {line.split()[1] for line in self.lines if line.startswith("event ")}

    def join(self) -> None:
        self._reader.join(5)


@pytest.mark.slow
def test_api_app_checks_roles_and_publishes_events(
    wis2l_servers: Servers, wis2l_database_url: str
) -> None:
    namespace = "api" + os.urandom(4).hex()
    env = {
        **os.environ,
        "DATABASE_URL": wis2l_database_url,
        "REDIS_URL": wis2l_servers.redis_url,
        "NATS_URL": wis2l_servers.nats_url,
        "WIS2L_NAMESPACE": namespace,
        "WIS2L_STREAM": namespace.upper(),
    }
    with subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--port", "0", "--limit", "100", "--per", "60"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            out = Output(proc)
            out.wait_for(lambda: any(row.startswith("serving ") for row in out.lines), 90)
            url = next(row for row in out.lines if row.startswith("serving ")).split()[1]
            tokens = {
                row.split()[1]: row.split()[3] for row in out.lines if row.startswith("token ")
            }
            assert sorted(tokens) == ["ada", "admin", "bo", "vi"]
            drive(url, tokens)
            out.wait_for(lambda: out.events() >= EVENTS, 30)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""
            out.join()
            assert out.lines[-2:] == ["server stopped; stopping the runtime", "stopped cleanly"]
            assert proc.stderr is not None
            assert "Traceback" not in proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def drive(url: str, tokens: dict[str, str]) -> None:
    """What each role may do, through the HTTP API."""

    def as_(who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {tokens[who]}"}

    with httpx.Client(base_url=url, timeout=30) as http:
        health = http.get("/health/live")
        assert health.status_code == 200
        assert "ratelimit" not in health.headers  # exempt
        assert http.get("/projects").status_code == 401
        me = http.get("/me", headers=as_("vi"))
        assert me.json() == {"name": "Vi", "role": "viewer"}
        assert me.headers["ratelimit-policy"] == '"api";q=100;w=60'
        assert me.headers["ratelimit"].startswith('"api";r=99;')

        new = {"name": "Tide Keeper", "slug": "tide-keeper", "engine": "godot"}
        assert http.post("/projects", json=new, headers=as_("vi")).status_code == 403
        made = http.post("/projects", json=new, headers=as_("ada"))
        assert made.status_code == 201, made.text
        assert http.post("/projects", json=new, headers=as_("ada")).status_code == 409
        slug = "/projects/tide-keeper"
        assert http.get(slug, headers=as_("bo")).json()["name"] == "Tide Keeper"
        refused = http.patch(slug, json={"name": "Mine"}, headers=as_("bo"))
        assert refused.status_code == 403
        assert refused.headers["content-type"] == "application/problem+json"
        assert http.patch(slug, json={"name": "TK"}, headers=as_("ada")).json()["name"] == "TK"
        assert http.patch(slug, json={"name": "TK2"}, headers=as_("admin")).status_code == 200

        build = http.post(f"{slug}/builds", json={"target": "html5"}, headers=as_("ada")).json()
        assert build["status"] == "pending"
        path = f"/builds/{build['id']}"
        assert http.patch(path, json={"status": "building"}, headers=as_("bo")).status_code == 403
        for change in ({"status": "building"}, {"progress": 50}, {"status": "completed"}):
            assert http.patch(path, json=change, headers=as_("ada")).status_code == 200
        wrong = http.patch(path, json={"status": "building"}, headers=as_("ada"))
        assert wrong.status_code == 422  # completed is final: InvalidTransition
        builds = http.get(f"{slug}/builds", headers=as_("vi")).json()
        assert [(b["status"], b["progress"]) for b in builds] == [("completed", 100)]

        color = {"category": "color", "value": "#ff6b35"}
        put = f"{slug}/tokens/color.primary"
        assert http.put(put, json=color, headers=as_("vi")).status_code == 403
        assert http.put(put, json=color, headers=as_("ada")).json()["version"] == 1
        assert http.get(f"{slug}/tokens", headers=as_("vi")).json()[0]["value"] == "#ff6b35"

        deploy = {"environment": "staging", "version": "1.0.0", "build_id": build["id"]}
        assert http.post(f"{slug}/deployments", json=deploy, headers=as_("bo")).status_code == 403
        made_deploy = http.post(f"{slug}/deployments", json=deploy, headers=as_("ada")).json()
        dpath = f"/deployments/{made_deploy['id']}"
        http.patch(dpath, json={"status": "in_progress"}, headers=as_("ada")).raise_for_status()
        done = {"status": "completed", "url": "https://staging.example/tk"}
        assert http.patch(dpath, json=done, headers=as_("ada")).json()["url"] == done["url"]

        assert http.get(f"{slug}/events", headers=as_("bo")).status_code == 403
        audit = http.get(f"{slug}/events", headers=as_("ada")).json()
        assert set(audit) >= EVENTS
        assert set(http.get(f"{slug}/events", headers=as_("admin")).json()) == set(audit)
