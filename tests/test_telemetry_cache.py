"""Redis spans and the caches' metrics, against the real Redis (and a closed port for
fail-open), captured with the ``wis2l_telemetry`` fixture."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import attrs
import pytest
from opentelemetry.trace import SpanKind, StatusCode
from redis.asyncio import Redis

from wis2l_core import ServiceUnavailable, Settings
from wis2l_core.cache import BuildCache, Cache, RateLimiter, RedisClient, SessionStore, TokenCache
from wis2l_core.telemetry import _cache
from wis2l_core.telemetry._core import Instruments
from wis2l_core.testing.telemetry import Captured


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def down(settings: Settings) -> AsyncIterator[RedisClient]:
    """A client of a Redis that is not there (a closed loopback port)."""
    port = _closed_port()
    away = attrs.evolve(
        settings,
        redis_url=f"redis://127.0.0.1:{port}/3",
        redis_connect_timeout=0.2,
        redis_socket_timeout=0.2,
    )
    client = RedisClient(away, breaker_seconds=30.0, retries=0)
    await client.open()
    yield client
    await client.aclose()


def hit_db(client: RedisClient) -> str:
    return urlsplit(client.settings.redis_url).path.strip("/") or "0"


def counts(captured: Captured, metric: str) -> dict[tuple[tuple[str, Any], ...], int]:
    return {tuple(sorted(p.attributes.items())): p.value for p in captured.points(metric)}


def ops(captured: Captured, name: str) -> dict[str, int]:
    """``wis2l.cache.operations`` of cache ``name`` by outcome."""
    found: dict[str, int] = {}
    for p in captured.points("wis2l.cache.operations"):
        if p.attributes["wis2l.cache.name"] == name:
            outcome = p.attributes["wis2l.cache.outcome"]
            found[outcome] = found.get(outcome, 0) + p.value
    return found


async def test_a_get_is_a_client_span_with_the_conventions(
    client: RedisClient, wis2l_telemetry: Captured
) -> None:
    cache = Cache(client, "profile")
    assert await cache.set("k", {"a": 1})
    with wis2l_telemetry.tracer().start_as_current_span("request") as parent:
        assert await cache.get("k") == {"a": 1}
        assert await cache.get("nothing") is None
    gets = wis2l_telemetry.named("GET")
    assert len(gets) == 2
    hit, miss = gets
    assert hit.kind is SpanKind.CLIENT
    assert hit.parent is not None
    assert hit.parent.span_id == parent.get_span_context().span_id
    attributes = dict(hit.attributes or {})
    assert attributes == {
        "db.system.name": "redis",
        "db.operation.name": "GET",
        "db.query.summary": "GET",
        "db.namespace": hit_db(client),
        "server.address": urlsplit(client.settings.redis_url).hostname,
        "server.port": urlsplit(client.settings.redis_url).port or 6379,
        "wis2l.cache.name": "store",
        "wis2l.cache.service": "profile",
        "wis2l.cache.hit": True,
    }
    assert (miss.attributes or {})["wis2l.cache.hit"] is False
    # No key, value or namespace in any attribute.
    for span in wis2l_telemetry.spans:
        for value in (span.attributes or {}).values():
            assert client.namespace not in str(value)
    assert wis2l_telemetry.span("SET").attributes["db.operation.name"] == "SET"  # type: ignore[index]
    assert "wis2l.cache.hit" not in (wis2l_telemetry.span("SET").attributes or {})
    assert ops(wis2l_telemetry, "store") == {"hit": 1, "miss": 1, "write": 1}
    point = next(
        p
        for p in wis2l_telemetry.points("wis2l.cache.operations")
        if p.attributes["wis2l.cache.outcome"] == "hit"
    )
    assert point.attributes["wis2l.cache.service"] == "profile"


async def test_every_command_sent_is_timed_in_the_shared_db_histogram(
    client: RedisClient, wis2l_telemetry: Captured
) -> None:
    cache = Cache(client, "profile")
    await cache.set("k", 1)
    await cache.get("k")
    await cache.delete("k")
    await cache.exists("k")
    points = wis2l_telemetry.points("db.client.operation.duration")
    by_op = {p.attributes["db.operation.name"]: p for p in points}
    assert set(by_op) == {"SET", "GET", "DEL", "EXISTS"}
    for p in points:
        assert p.attributes["db.system.name"] == "redis"
        assert p.attributes["db.namespace"] == hit_db(client)
        assert p.count == 1
        assert 0 < p.sum < 5
    assert ops(wis2l_telemetry, "store") == {"write": 2, "hit": 1, "miss": 1}


async def test_an_error_reply_has_its_status_code_and_fails_open(
    client: RedisClient, wis2l_telemetry: Captured
) -> None:
    key = client.key("x", "list")
    await client.redis.lpush(key, "a")
    assert await client.call("get", "fallback", Redis.get, key) == "fallback"
    span = wis2l_telemetry.span("GET")
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "ResponseError"
    (event,) = span.events
    assert event.name == "wis2l.cache.fail_open"
    assert (event.attributes or {})["error.type"] == "ResponseError"
    (point,) = wis2l_telemetry.points("db.client.operation.duration")
    assert point.attributes["db.response.status_code"] == "WRONGTYPE"
    assert point.attributes["error.type"] == "ResponseError"
    assert ops(wis2l_telemetry, "store") == {"fail_open": 1}


async def test_redis_down_is_a_fail_open_event_then_the_breaker(
    down: RedisClient, wis2l_telemetry: Captured
) -> None:
    cache = Cache(down, "profile")
    assert await cache.get("k") is None  # the connection is refused
    assert await cache.get("k") is None  # the breaker is open: Redis is not asked
    first, second = wis2l_telemetry.named("GET")
    for span, reason in [(first, "ConnectionError"), (second, "breaker_open")]:
        assert span.status.status_code is StatusCode.ERROR
        assert (span.attributes or {})["error.type"] == reason
        assert [e.name for e in span.events] == ["wis2l.cache.fail_open"]
        assert (span.events[0].attributes or {})["error.type"] == reason
    assert (first.attributes or {})["db.namespace"] == "3"
    assert (first.attributes or {})["server.port"] == urlsplit(down.settings.redis_url).port
    assert ops(wis2l_telemetry, "store") == {"fail_open": 2}
    # Only the command that was sent is timed.
    (point,) = wis2l_telemetry.points("db.client.operation.duration")
    assert point.count == 1
    assert point.attributes["error.type"] == "ConnectionError"


async def test_a_strict_call_that_cannot_fail_open_is_an_error(
    down: RedisClient, wis2l_telemetry: Captured
) -> None:
    sessions = SessionStore(down)
    with pytest.raises(ServiceUnavailable):
        await sessions.create(uuid.uuid4())
    with pytest.raises(ServiceUnavailable):
        await sessions.create(uuid.uuid4())
    first, second = wis2l_telemetry.named("EVALSHA session.create")
    assert (first.attributes or {})["error.type"] == "ConnectionError"
    assert (second.attributes or {})["error.type"] == "breaker_open"
    for span in (first, second):
        assert span.status.status_code is StatusCode.ERROR
        assert not span.events  # not a fail-open: the caller got the error
    assert ops(wis2l_telemetry, "sessions") == {"error": 2}


async def test_scripts_are_named_and_tell_hits(
    client: RedisClient, wis2l_telemetry: Captured
) -> None:
    tokens = TokenCache(client)
    project = uuid.uuid4()

    async def load() -> list[str]:
        return ["red"]

    assert await tokens.get_or_load(project, load) == ["red"]
    assert await tokens.get_or_load(project, load) == ["red"]
    assert await tokens.invalidate(project)
    names = [s.name for s in wis2l_telemetry.spans]
    assert names == [
        "GET",
        "EVALSHA tokens.acquire",
        "EVALSHA tokens.store",
        "GET",
        "EVALSHA tokens.invalidate",
    ]
    acquire = wis2l_telemetry.span("EVALSHA tokens.acquire")
    assert (acquire.attributes or {})["db.operation.name"] == "EVALSHA"
    assert (acquire.attributes or {})["db.query.summary"] == "EVALSHA tokens.acquire"
    assert (acquire.attributes or {})["wis2l.cache.hit"] is False
    assert (acquire.attributes or {})["wis2l.cache.name"] == "tokens"
    assert ops(wis2l_telemetry, "tokens") == {"miss": 2, "write": 2, "hit": 1}

    sessions = SessionStore(client)
    session = await sessions.create(uuid.uuid4())
    assert await sessions.get(session.token) is not None
    assert await sessions.refresh(session.token) is not None
    assert await sessions.revoke(session.token)
    assert await sessions.get(session.token) is None
    assert ops(wis2l_telemetry, "sessions") == {"write": 2, "hit": 2, "miss": 1}
    assert (wis2l_telemetry.span("EVALSHA session.refresh").attributes or {})["wis2l.cache.hit"]

    builds = BuildCache(client)
    assert await builds.get("abc") is None
    assert await builds.set("abc", {"files": []})
    assert ops(wis2l_telemetry, "builds") == {"miss": 1, "write": 1}


async def test_rate_limit_decisions_by_policy(
    client: RedisClient, down: RedisClient, wis2l_telemetry: Captured
) -> None:
    limiter = RateLimiter(client, policy="login")
    key = f"ip:{uuid.uuid4()}"
    for _ in range(3):
        await limiter.hit(key, limit=2, per=60)
    await limiter.hit(key, limit=2, per=60, policy="spark")
    assert counts(wis2l_telemetry, "wis2l.ratelimit.decisions") == {
        (("wis2l.ratelimit.decision", "allowed"), ("wis2l.ratelimit.policy", "login")): 2,
        (("wis2l.ratelimit.decision", "denied"), ("wis2l.ratelimit.policy", "login")): 1,
        (("wis2l.ratelimit.decision", "denied"), ("wis2l.ratelimit.policy", "spark")): 1,
    }
    assert len(wis2l_telemetry.named("EVALSHA ratelimit.gcra")) == 4
    assert ops(wis2l_telemetry, "ratelimit") == {"write": 4}

    wis2l_telemetry.reader.collect()  # start the next totals from here
    await RateLimiter(down).hit("k", limit=1, per=1)
    await RateLimiter(down, fail_mode="closed").hit("k", limit=1, per=1)
    found = counts(wis2l_telemetry, "wis2l.ratelimit.decisions")
    assert (
        found[
            (
                ("wis2l.ratelimit.decision", "allowed"),
                ("wis2l.ratelimit.fail_mode", "open"),
                ("wis2l.ratelimit.policy", "default"),
            )
        ]
        == 1
    )
    assert (
        found[
            (
                ("wis2l.ratelimit.decision", "denied"),
                ("wis2l.ratelimit.fail_mode", "closed"),
                ("wis2l.ratelimit.policy", "default"),
            )
        ]
        == 1
    )


async def test_without_an_sdk_the_plain_path_runs(
    client: RedisClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not _cache.observing()

    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("observed_call ran without an SDK")

    def make(meter: Any) -> Any:
        raise AssertionError("an instrument was made without an SDK")

    monkeypatch.setattr(_cache, "observed_call", refuse)
    monkeypatch.setattr(_cache, "_INSTRUMENTS", Instruments(make))
    cache = Cache(client, "plain")
    assert await cache.set("k", 1)
    assert await cache.get("k") == 1
    await RateLimiter(client).hit("k", limit=5, per=1)
    assert (await RateLimiter(RedisClient(client.settings)).hit("k", limit=5, per=1)).allowed


@attrs.frozen
class _Runtime:
    redis: RedisClient


async def _request(app: Any) -> int:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "headers": [],
        "client": ("203.0.113.9", 5000),
    }
    await app(scope, receive, send)
    return int(sent[0]["status"])


async def test_the_middleware_counts_under_its_policy(
    client: RedisClient, down: RedisClient, wis2l_telemetry: Captured
) -> None:
    from wis2l_core import RateLimitMiddleware

    async def hello(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"hi"})

    up = RateLimitMiddleware(hello, _Runtime(client), limit=1, per=60, policy="api")
    assert [await _request(up), await _request(up)] == [200, 429]
    closed = RateLimitMiddleware(
        hello, _Runtime(down), limit=1, per=60, policy="api", fail_mode="closed"
    )
    assert await _request(closed) == 503
    assert counts(wis2l_telemetry, "wis2l.ratelimit.decisions") == {
        (("wis2l.ratelimit.decision", "allowed"), ("wis2l.ratelimit.policy", "api")): 1,
        (("wis2l.ratelimit.decision", "denied"), ("wis2l.ratelimit.policy", "api")): 1,
        (
            ("wis2l.ratelimit.decision", "denied"),
            ("wis2l.ratelimit.fail_mode", "closed"),
            ("wis2l.ratelimit.policy", "api"),
        ): 1,
    }
    assert ops(wis2l_telemetry, "ratelimit") == {"write": 2, "error": 1}
