"""The runtime while real servers die, hang and come back; SIGTERM in a worker process.

The outage tests run a private embedded stack per test (PostgreSQL, Valkey and NATS on
free loopback ports, about half a second to start) and stop, kill, freeze and restart its
servers on their own ports, so the session's shared servers are never touched. The
SIGTERM test runs ``tests/lifecycle_worker.py`` in a subprocess on the session's servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest

from helpers import eventually
from lifecycle_worker import subscribe
from wis2l_core import HealthReport, HealthStatus, Settings, Wis2l, health_app
from wis2l_core.events import BuildProgress, EventBus

RECOVERY = 20.0
"""Seconds a service may take to come back after a restart."""

HEALTH_TIMEOUT = 1.0
BOUND = 0.25
"""How much longer than its timeout a health report may take."""
WORKER = Path(__file__).with_name("lifecycle_worker.py")


# -- a private stack whose servers the test stops and restarts ---------------------------


@attrs.define
class Server:
    """One server of the private stack, as it was launched (to launch it again)."""

    name: str
    port: int
    argv: list[str]
    uid: int
    gid: int
    pid: int
    proc: subprocess.Popen[bytes] | None = None  # set once the test relaunched it


class PrivateStack:
    """An embedded stack of the test's own; each server can be stopped, frozen and
    restarted on the same port (with the same data directory)."""

    def __init__(self) -> None:
        from wis2l_core.dev import EmbeddedStack

        self.stack = EmbeddedStack()
        self.servers: dict[str, Server] = {}

    def start(self) -> None:
        self.stack.start()
        ports = {
            "database": self.stack.database_url,
            "redis": self.stack.redis_url,
            "nats": self.stack.nats_url,
        }
        for name, pid in self.stack.pids.items():
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
            ids = {
                key: int(line.split()[1])
                for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                for key in ("Uid:", "Gid:")
                if line.startswith(key)
            }
            port = int(ports[name].rsplit(":", 1)[1].split("/")[0])
            args = [a.decode() for a in argv]
            if name == "redis":  # Valkey rewrites its command line: rebuild it
                assert self.stack.data_dir is not None
                args = [
                    os.readlink(f"/proc/{pid}/exe"),
                    *("--port", str(port), "--bind", "127.0.0.1", "--save", ""),
                    *("--appendonly", "no", "--dir", str(self.stack.data_dir / "valkey")),
                ]
            self.servers[name] = Server(name, port, args, ids["Uid:"], ids["Gid:"], pid)

    def settings(self, **overrides: Any) -> Settings:
        tag = secrets.token_hex(4)
        base: dict[str, Any] = {
            "namespace": f"t{tag}",
            "stream_name": f"T{tag.upper()}",
            "health_timeout": HEALTH_TIMEOUT,
            "db_pool_timeout": 2.0,
            "redis_socket_timeout": 0.3,
            "redis_connect_timeout": 0.3,
            "nats_connect_timeout": 0.5,
        }
        return self.stack.settings(**(base | overrides))

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        server = self.servers[name]
        _thaw_all(server.pid)
        os.kill(server.pid, sig)
        if server.proc is not None:
            server.proc.wait(15)
            return
        deadline = time.monotonic() + 15
        while _alive(server.pid):  # a child of the stack: it reaps it at stop
            assert time.monotonic() < deadline, f"{name} did not exit"
            time.sleep(0.02)

    def freeze(self, name: str) -> None:
        """Stop the server and its children (PostgreSQL's backends) where they stand."""
        for pid in _family(self.servers[name].pid):
            os.kill(pid, signal.SIGSTOP)

    def thaw(self, name: str) -> None:
        for pid in _family(self.servers[name].pid):
            os.kill(pid, signal.SIGCONT)

    def restart(self, name: str) -> None:
        server = self.servers[name]
        other_user = server.uid != os.geteuid()
        server.proc = subprocess.Popen(
            server.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            user=server.uid if other_user else None,
            group=server.gid if other_user else None,
            extra_groups=[] if other_user else None,
        )
        server.pid = server.proc.pid
        deadline = time.monotonic() + 30
        while not _answers(name, server.port):
            assert server.proc.poll() is None, f"{name} exited at restart"
            assert time.monotonic() < deadline, f"{name} did not come back"
            time.sleep(0.05)

    def close(self) -> None:
        for server in self.servers.values():
            if server.proc is not None and server.proc.poll() is None:
                _thaw_all(server.pid)
                server.proc.kill()
                server.proc.wait()
            elif server.proc is None and _alive(server.pid):
                _thaw_all(server.pid)
        self.stack.stop()


def _family(pid: int) -> list[int]:
    """``pid`` and its children (PostgreSQL backends each run in a session of their own)."""
    found = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                found.append(int(entry.name))
    return found


def _thaw_all(pid: int) -> None:
    for member in _family(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGCONT)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _answers(name: str, port: int) -> bool:
    try:
        if name == "database":
            url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
            with psycopg.connect(url, connect_timeout=1, sslmode="disable"):
                return True
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            if name == "redis":
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
            return sock.recv(4096).startswith(b"INFO ")
    except (OSError, psycopg.Error):
        return False


@pytest.fixture
def stack() -> Iterator[PrivateStack]:
    private = PrivateStack()
    try:
        private.start()
        yield private
    finally:
        private.close()


# -- helpers -----------------------------------------------------------------------------


async def timed_health(wis: Wis2l) -> tuple[HealthReport, float]:
    started = time.perf_counter()
    report = await wis.health()
    return report, time.perf_counter() - started


def status_is(wis: Wis2l, status: HealthStatus) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await wis.health()).status is status

    return check


async def ready_status(wis: Wis2l) -> int:
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/health/ready", "root_path": ""}
    await health_app(wis)(scope, receive, send)
    return int(sent[0]["status"])


async def migrated(settings: Settings, **kwargs: Any) -> Wis2l:
    wis = Wis2l(settings, **kwargs)
    await wis.migrate()
    return wis


async def a_build(wis: Wis2l) -> uuid.UUID:
    tag = secrets.token_hex(4)
    user = await wis.users.create(email=f"{tag}@example.com", name="U", subject=f"n|{tag}")
    project = await wis.projects.create(owner_id=user.id, name="P", slug=f"p-{tag}", engine="web")
    build = await wis.builds.create(project_id=project.id, target="webgl")
    await wis.builds.update(build.id, status="building")
    return build.id


# -- outages -----------------------------------------------------------------------------


@pytest.mark.timing
@pytest.mark.disruptive
@pytest.mark.slow
async def test_redis_killed_or_hung_is_degraded_then_ok_without_a_restart(
    stack: PrivateStack,
) -> None:
    wis = await migrated(stack.settings(), seed_subscribers=False)
    async with wis:
        await eventually(status_is(wis, HealthStatus.OK), timeout=RECOVERY)
        assert await wis.cache.set("k", "before")

        stack.kill("redis")
        report, took = await timed_health(wis)
        assert report.status is HealthStatus.DEGRADED, report.to_dict()
        assert report.http_status == 200
        assert report.failed == ("redis",)
        assert took < HEALTH_TIMEOUT + BOUND
        assert await ready_status(wis) == 200
        assert await wis.cache.get("k") is None  # fails open
        await a_build(wis)  # the database work goes on

        stack.restart("redis")
        await eventually(status_is(wis, HealthStatus.OK), timeout=RECOVERY)
        await eventually(lambda: wis.cache.set("k", "after"), timeout=RECOVERY)
        assert await wis.cache.get("k") == "after"

        stack.freeze("redis")  # hung: accepts nothing, answers nothing
        report, took = await timed_health(wis)
        assert report.status is HealthStatus.DEGRADED
        assert report.failed == ("redis",)
        assert "timeout" in str(report.checks["redis"].error).lower()  # the socket timeout
        assert took < HEALTH_TIMEOUT + BOUND
        stack.thaw("redis")
        await eventually(status_is(wis, HealthStatus.OK), timeout=RECOVERY)


@pytest.mark.timing
@pytest.mark.disruptive
@pytest.mark.slow
async def test_database_stopped_or_hung_is_unhealthy_503_then_ok_without_a_restart(
    stack: PrivateStack,
) -> None:
    wis = await migrated(stack.settings(), seed_subscribers=False)
    async with wis:
        await eventually(status_is(wis, HealthStatus.OK), timeout=RECOVERY)

        stack.kill("database", signal.SIGINT)  # PostgreSQL's fast shutdown
        report, took = await timed_health(wis)
        assert report.status is HealthStatus.UNHEALTHY, report.to_dict()
        assert report.http_status == 503
        assert not report.checks["database"].healthy
        assert report.checks["database"].critical
        assert took < HEALTH_TIMEOUT + BOUND
        assert await ready_status(wis) == 503
        assert not wis.stopping  # not ready, but not stopping either

        stack.restart("database")
        await eventually(status_is(wis, HealthStatus.OK), timeout=RECOVERY)
        await a_build(wis)

        stack.freeze("database")
        report, took = await timed_health(wis)
        assert report.status is HealthStatus.UNHEALTHY
        assert took < HEALTH_TIMEOUT + BOUND
        stack.thaw("database")
        await eventually(status_is(wis, HealthStatus.OK), timeout=RECOVERY)
        await a_build(wis)


@pytest.mark.timing
@pytest.mark.disruptive
@pytest.mark.slow
@pytest.mark.parametrize("store", ["kept", "lost"])
async def test_nats_killed_is_degraded_then_ok_and_the_backlog_is_relayed(
    stack: PrivateStack, store: str
) -> None:
    wis = await migrated(stack.settings(), seed_subscribers=False)
    seen: list[int] = []

    @wis.bus.subscribe(BuildProgress, durable="watch", concurrency=4)
    async def watch(event: BuildProgress) -> None:
        seen.append(event.progress)

    async with wis:
        build = await a_build(wis)
        await eventually(status_is(wis, HealthStatus.OK), timeout=RECOVERY)
        await eventually(lambda: backlog_is(wis, 0), timeout=RECOVERY)  # BuildStarted is out

        stack.kill("nats")
        await eventually(lambda: _true(not wis.bus.connected), timeout=RECOVERY)
        report, took = await timed_health(wis)
        assert report.status is HealthStatus.DEGRADED, report.to_dict()
        assert report.http_status == 200
        assert report.failed == ("nats",)
        assert took < HEALTH_TIMEOUT + BOUND
        for value in range(1, 21):  # written while NATS is down: they wait in the outbox
            await wis.builds.update(build, progress=value)
        assert await backlog_is(wis, 20)

        if store == "lost":  # NATS comes back empty: the bus must make the stream again
            assert stack.stack.data_dir is not None
            shutil.rmtree(stack.stack.data_dir / "nats" / "jetstream")
        stack.restart("nats")  # same port; the app is not restarted
        await eventually(status_is(wis, HealthStatus.OK), timeout=RECOVERY)
        await eventually(lambda: _true(sorted(seen) == list(range(1, 21))), timeout=RECOVERY)
        assert await backlog_is(wis, 0)


async def backlog_is(wis: Wis2l, size: int) -> bool:
    return (await wis.relay.backlog()).size == size


async def _true(value: bool) -> bool:
    return value


@pytest.mark.timing
@pytest.mark.disruptive
@pytest.mark.slow
async def test_development_starts_with_only_the_database_and_uses_the_rest_when_they_come(
    stack: PrivateStack,
) -> None:
    stack.kill("redis")
    stack.kill("nats")
    wis = await migrated(stack.settings())  # with the seed subscribers
    seen: list[int] = []

    @wis.bus.subscribe(BuildProgress, durable="watch")
    async def watch(event: BuildProgress) -> None:
        seen.append(event.progress)

    started = time.perf_counter()
    async with wis:
        assert time.perf_counter() - started < 0.5 + 0.5 + 1.0  # NATS: connect timeout
        report = await wis.health()
        assert report.status is HealthStatus.DEGRADED
        assert set(report.failed) == {"redis", "nats"}
        build = await a_build(wis)
        await wis.builds.update(build, progress=42)
        assert not await wis.cache.set("k", "v")  # Redis is away: a miss, not an error

        stack.restart("redis")
        stack.restart("nats")
        await eventually(status_is(wis, HealthStatus.OK), timeout=RECOVERY)
        await eventually(lambda: _true(seen == [42]), timeout=RECOVERY)
        await eventually(lambda: wis.cache.set("k", "v"), timeout=RECOVERY)
        assert await wis.cache.get("k") == "v"


# -- SIGTERM while a handler runs --------------------------------------------------------


def worker_env(settings: Settings, shutdown_timeout: float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_"))}
    return env | {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "NATS_URL": ",".join(settings.nats_urls),
        "WIS2L_NAMESPACE": settings.namespace,
        "WIS2L_STREAM": settings.stream_name,
        "WIS2L_SHUTDOWN_TIMEOUT": str(shutdown_timeout),
        "WIS2L_ENV": "development",
    }


def progress(value: int) -> BuildProgress:
    return BuildProgress(project_id=uuid.uuid4(), build_id=uuid.uuid4(), progress=value)


def marker(directory: Path, event: BuildProgress, pid: int, stage: str) -> Path:
    return directory / f"{event.id}.{pid}.{stage}"


@pytest.mark.timing
@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "sleep", "shutdown_timeout"), [("drain", 1.0, 25.0), ("cut", 30.0, 0.5)]
)
async def test_sigterm_while_handling_exits_0_and_loses_no_message(
    wis2l_settings: Settings,
    bus: EventBus,
    tmp_path: Path,
    case: str,
    sleep: float,
    shutdown_timeout: float,
) -> None:
    """drain: the running handler finishes; the event queued behind it goes to the next
    consumer. cut: the handler outlives the shutdown timeout, is cancelled, and its event
    (delivered, never acknowledged) is delivered again to the next consumer."""
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), str(tmp_path), str(sleep)],
        env=worker_env(wis2l_settings, shutdown_timeout),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        first, second = progress(1), None
        await bus.publish(first)
        await eventually(
            lambda: _true(marker(tmp_path, first, proc.pid, "started").exists()), timeout=60
        )
        if case == "drain":
            second = progress(2)
            await bus.publish(second)  # waits behind the running handler (concurrency 1)
            await asyncio.sleep(0.2)
        sent = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 60)
        took = time.perf_counter() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    output = (tmp_path / "worker.log").read_text()
    assert code == 0, output
    assert "Traceback" not in output, output
    assert (tmp_path / f"exit.{proc.pid}").exists()  # main() returned on its own
    finished = marker(tmp_path, first, proc.pid, "done").exists()
    if case == "drain":
        assert second is not None
        assert finished  # the handler ran to its end
        assert not marker(tmp_path, second, proc.pid, "started").exists()
        assert took < sleep + 3.0
    else:
        assert not finished  # cancelled at the shutdown timeout
        assert took < shutdown_timeout + 3.0

    # a new consumer with the same durable name gets what was not acknowledged
    expected = second if second is not None else first
    again = Wis2l(wis2l_settings, seed_subscribers=False)
    subscribe(again, tmp_path, 0.0)
    async with again:
        await eventually(
            lambda: _true(marker(tmp_path, expected, os.getpid(), "done").exists()),
            timeout=RECOVERY,
        )
        if case == "drain":
            await asyncio.sleep(0.5)
            assert not marker(tmp_path, first, os.getpid(), "started").exists()  # was acked
