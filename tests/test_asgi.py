"""health_app: the three routes, 404/405, HEAD, mount prefixes and lifespan, driven in-process."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest

from wis2l_core.asgi import HealthApp, health_app
from wis2l_core.cache import RedisClient
from wis2l_core.config import Settings
from wis2l_core.health import HealthChecker, HealthReport
from wis2l_core.runtime import Wis2l


@attrs.define
class Runtime:
    """What ``Wis2l`` gives the app: ``health(critical_only=)`` and ``stopping``."""

    checker: HealthChecker
    stopping: bool = False
    calls: list[bool] = attrs.field(factory=list)

    async def health(self, *, critical_only: bool = False) -> HealthReport:
        self.calls.append(critical_only)
        return await self.checker.run(critical_only=critical_only)


@attrs.frozen
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def call(
    app: HealthApp,
    path: str,
    *,
    method: str = "GET",
    root_path: str = "",
    query_string: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> Response:
    """A minimal ASGI 3 HTTP client: one request, the response messages collected."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": root_path,
        "query_string": query_string,
        "headers": [(b"host", b"test"), *(headers or [])],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    await app(scope, receive, send)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return Response(sent[0]["status"], headers, sent[1]["body"])


def dead_redis_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"redis://127.0.0.1:{s.getsockname()[1]}/0"


@pytest.fixture
async def redis_client(wis2l_settings: Settings) -> AsyncIterator[RedisClient]:
    client = RedisClient(wis2l_settings)
    await client.open()
    yield client
    await client.aclose()


@pytest.fixture
def runtime(wis: Wis2l, redis_client: RedisClient) -> Runtime:
    return Runtime(
        HealthChecker.for_services(wis.settings, database=wis.database, redis=redis_client)
    )


async def test_health_serves_the_full_report(runtime: Runtime) -> None:
    response = await call(health_app(runtime), "/health")
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert int(response.headers["content-length"]) == len(response.body)
    data = response.json()
    assert data["status"] == "ok"
    assert list(data) == ["status", "uptime_s", "version", "checks"]
    assert set(data["checks"]) == {"database", "redis"}
    assert data["checks"]["database"]["healthy"] is True
    assert runtime.calls == [False]


async def test_live_answers_while_stopping_and_unhealthy() -> None:
    async def down() -> None:
        raise ConnectionError("database is down")

    checker = HealthChecker()
    checker.add("database", down, critical=True)
    runtime = Runtime(checker, stopping=True)
    response = await call(health_app(runtime), "/health/live")
    assert (response.status, response.json()) == (200, {"status": "alive"})
    assert runtime.calls == []  # liveness runs no check


async def test_ready_runs_only_critical_checks(wis: Wis2l) -> None:
    redis = RedisClient(Settings(redis_url=dead_redis_url()))
    await redis.open()
    try:
        runtime = Runtime(
            HealthChecker.for_services(wis.settings, database=wis.database, redis=redis)
        )
        app = health_app(runtime)
        report = await call(app, "/health")
        ready = await call(app, "/health/ready")
    finally:
        await redis.aclose()
    assert (report.status, report.json()["status"]) == (200, "degraded")
    assert ready.status == 200
    assert ready.json()["status"] == "ready"
    assert list(ready.json()["checks"]) == ["database"]
    assert runtime.calls == [False, True]


async def test_ready_is_503_when_stopping_without_running_checks(runtime: Runtime) -> None:
    app = health_app(runtime)
    assert (await call(app, "/health/ready")).status == 200
    runtime.stopping = True
    response = await call(app, "/health/ready")
    assert (response.status, response.json()) == (503, {"status": "stopping"})
    assert runtime.calls == [True]


async def test_critical_failure_is_503_on_health_and_ready() -> None:
    async def down() -> None:
        raise ConnectionError("postgresql://ada:hunter22@db/x refused")

    checker = HealthChecker()
    checker.add("database", down, critical=True)
    app = health_app(Runtime(checker))
    report = await call(app, "/health")
    ready = await call(app, "/health/ready")
    assert report.status == 503
    assert report.json()["status"] == "unhealthy"
    assert report.json()["checks"]["database"]["error"] == (
        "ConnectionError: postgresql://ada:***@db/x refused"
    )
    assert ready.status == 503
    assert ready.json()["status"] == "not ready"
    assert b"hunter22" not in report.body + ready.body


@pytest.mark.timing
async def test_a_hung_check_answers_within_the_timeout() -> None:
    async def hung() -> None:
        await asyncio.sleep(10)

    checker = HealthChecker(timeout=0.2)
    checker.add("nats", hung)
    start = time.perf_counter()
    response = await call(health_app(Runtime(checker)), "/health")
    assert time.perf_counter() - start < 0.25
    assert response.status == 200
    assert response.json()["checks"]["nats"]["error"] == "timed out after 0.2 s"


async def test_health_raising_is_a_503_not_a_crash() -> None:
    @attrs.define
    class Broken:
        stopping: bool = False

        async def health(self, *, critical_only: bool = False) -> HealthReport:
            raise RuntimeError("redis://:pw-123456@cache/0 exploded")

    app = health_app(Broken())
    for path in ("/health", "/health/ready"):
        response = await call(app, path)
        assert response.status == 503
        assert response.json() == {
            "status": "unhealthy",
            "error": "RuntimeError: redis://:***@cache/0 exploded",
        }


@pytest.mark.parametrize("path", ["/", "/nope", "/health/nope", "/healthz", "/x/live", "/ready/x"])
async def test_unknown_paths_are_404(path: str) -> None:
    response = await call(health_app(Runtime(HealthChecker())), path)
    assert (response.status, response.json()) == (404, {"error": "not found"})


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
async def test_other_methods_are_405(method: str) -> None:
    runtime = Runtime(HealthChecker())
    response = await call(health_app(runtime), "/health/ready", method=method)
    assert response.status == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert runtime.calls == []


async def test_head_has_headers_and_no_body() -> None:
    response = await call(health_app(Runtime(HealthChecker())), "/health", method="HEAD")
    assert response.status == 200
    assert response.body == b""
    assert int(response.headers["content-length"]) > 0


@pytest.mark.parametrize(
    ("root_path", "path", "route"),
    [
        ("/ops", "/ops/health/ready", "ready"),  # uvicorn --root-path: path keeps the prefix
        ("/health", "/health/live", "live"),  # Starlette Mount("/health"), newer versions
        ("/health", "/live", "live"),  # Starlette Mount("/health"), older versions
        ("/health", "/health", "report"),
        ("/health", "", "report"),
        ("", "/api/v1/health/", "report"),  # mounted without root_path: any prefix
        ("", "/api/v1/health/ready", "ready"),
    ],
)
async def test_mount_prefixes(root_path: str, path: str, route: str) -> None:
    response = await call(health_app(Runtime(HealthChecker())), path, root_path=root_path)
    assert response.status == 200
    status = response.json()["status"]
    assert status == {"ready": "ready", "live": "alive", "report": "ok"}[route]


async def test_lifespan_completes_startup_and_shutdown() -> None:
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    app = health_app(Runtime(HealthChecker()))
    await asyncio.wait_for(app({"type": "lifespan"}, receive, send), 1)
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
