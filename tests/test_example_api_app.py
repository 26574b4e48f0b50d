"""examples/api_app.py under uvicorn, driven over HTTP with the tokens it prints: role
checks, ownership, rate-limit headers, and the events its writes publish; served as
``uvicorn examples.api_app:app`` with the issuer of ``wis2l dev token``; and its uvicorn
settings, under which a client cannot dodge the rate limit with X-Forwarded-For."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import uvicorn

from wis2l_core import Wis2l
from wis2l_core.cli import main
from wis2l_core.dev.issuer import DevIssuer
from wis2l_core.testing.servers import Servers

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "api_app.py"
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
        # the per-user policy (inside AuthMiddleware), then the per-address one (outside)
        assert me.headers["ratelimit-policy"] == '"api";q=100;w=60, "client";q=500;w=60'
        assert me.headers["ratelimit"].startswith('"api";r=99;')
        unauthenticated = http.get("/projects")  # counted by address, once
        assert unauthenticated.headers["ratelimit-policy"] == '"client";q=500;w=60'
        for body in (b"not json", b"[1, 2]"):
            bad = http.post("/projects", content=body, headers=as_("ada"))
            assert bad.status_code == 400, bad.text
            assert bad.headers["content-type"] == "application/problem+json"
            assert bad.json()["title"] == "BadRequest"

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
        # as identity.md says, each policy once
        assert refused.headers["ratelimit-policy"] == '"api";q=100;w=60, "client";q=500;w=60'
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


def servers_env(servers: Servers, database_url: str) -> dict[str, str]:
    namespace = "api" + os.urandom(4).hex()
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": servers.redis_url,
        "NATS_URL": servers.nats_url,
        "WIS2L_NAMESPACE": namespace,
        "WIS2L_STREAM": namespace.upper(),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(http: httpx.Client) -> bool:
    try:
        return http.get("/health/live").status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.slow
def test_uvicorn_serves_the_module_app_and_dev_tokens_of_the_configured_issuer(
    wis2l_servers: Servers,
    wis2l_database_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``uvicorn examples.api_app:app`` with ``WIS2L_OIDC_ISSUER`` set (as ``wis2l dev``
    does): a ``wis2l dev token`` signs in, and a token of another issuer is refused with
    a body naming the configured one."""
    with DevIssuer(state_dir=tmp_path) as issuer, DevIssuer() as other:
        env = {**servers_env(wis2l_servers, wis2l_database_url), **issuer.environ()}
        port = free_port()
        command = [sys.executable, "-m", "uvicorn", "examples.api_app:app", "--no-proxy-headers"]
        with subprocess.Popen(
            [*command, "--port", str(port), "--log-level", "warning"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as proc:
            try:
                out = Output(proc)
                url = f"http://127.0.0.1:{port}"
                out.wait_for(lambda: any(row.startswith("user ") for row in out.lines), 90)
                assert f"issuer     {issuer.issuer} (WIS2L_OIDC_ISSUER)" in out.lines
                with httpx.Client(base_url=url, timeout=30) as http:
                    out.wait_for(lambda: _answers(http), 30)
                    dev_token = ["dev", "token", "--data-dir", str(tmp_path)]
                    assert main([*dev_token, "--sub", "nocturna|ada"]) == 0
                    token = capsys.readouterr().out.strip()
                    me = http.get("/me", headers={"Authorization": f"Bearer {token}"})
                    assert me.json() == {"name": "Ada", "role": "developer"}, me.text
                    foreign = other.mint(sub="nocturna|ada")
                    refused = http.get("/me", headers={"Authorization": f"Bearer {foreign}"})
                    assert refused.status_code == 401
                    assert issuer.issuer in refused.json()["detail"]
                proc.send_signal(signal.SIGINT)
                assert proc.wait(timeout=30) == 0, out.lines
                out.join()
                assert "server stopped; stopping the runtime" in out.lines
                assert not any("Traceback" in row for row in out.lines), out.lines
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()


def test_importing_the_example_does_no_io() -> None:
    """``examples.api_app`` imports (as uvicorn imports it) without starting anything."""
    code = (
        "import examples.api_app as m, threading; assert m.app._api is None; "
        "print(threading.active_count())"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stdout.strip() == "1"  # no issuer, no server thread


# -- the rate limit under uvicorn -------------------------------------------------------


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("api_app_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class QuietServer(uvicorn.Server):
    """uvicorn in the test's loop, without touching the process's signal handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serving(config: uvicorn.Config) -> AsyncIterator[str]:
    server = QuietServer(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        assert server.started, "uvicorn did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def rotate_forwarded_for(base: str, count: int) -> list[int]:
    """``count`` anonymous requests from loopback, each claiming another address."""
    async with httpx.AsyncClient(base_url=base) as http:
        return [
            (await http.get("/me", headers={"X-Forwarded-For": f"203.0.113.{n}"})).status_code
            for n in range(count)
        ]


async def test_rotating_forwarded_for_from_loopback_gets_exactly_the_limit(
    example: Any, wis_oidc: Wis2l
) -> None:
    """Under the example's uvicorn settings the address is the peer's: 14 requests each
    claiming a new address get exactly ``ip_limit`` (10) through. Under uvicorn's
    defaults the header from 127.0.0.1 is believed, and all 14 get through: the reason
    for ``proxy_headers=False``."""
    limit = 10
    asgi = example.api(wis_oidc, limit=100, per=600, ip_limit=limit)
    config = example.server_config(asgi, host="127.0.0.1", port=0)
    assert config.proxy_headers is False
    async with serving(config) as base:
        answers = await rotate_forwarded_for(base, 14)
    assert answers == [401] * limit + [429] * 4
    # (each claimed address is a bucket of its own, untouched by the run above)
    defaults = uvicorn.Config(asgi, host="127.0.0.1", port=0, log_level="warning")
    async with serving(defaults) as base:
        assert await rotate_forwarded_for(base, 14) == [401] * 14
