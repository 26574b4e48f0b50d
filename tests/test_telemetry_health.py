"""Health runs' spans and metrics: ``health``, ``health.check <name>``,
``wis2l.health.check.duration`` and ``wis2l.health.status``, with a real Redis."""

from __future__ import annotations

import asyncio
import functools
import socket
from collections.abc import Mapping
from typing import Any

import attrs
import pytest
from opentelemetry.trace import StatusCode

from wis2l_core import Settings
from wis2l_core.cache import Cache, RedisClient
from wis2l_core.health import CheckFailed, HealthChecker, HealthStatus, ping_check
from wis2l_core.telemetry import _health
from wis2l_core.telemetry._core import Instruments
from wis2l_core.testing.telemetry import Captured


async def passes() -> None:
    return None


async def fails() -> None:
    raise CheckFailed("oldest unpublished event is 95 s old")


async def hangs() -> None:
    await asyncio.sleep(30)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gauges(captured: Captured) -> dict[str, float]:
    return {
        p.attributes["wis2l.health.check"]: p.value for p in captured.points("wis2l.health.status")
    }


async def test_a_run_is_a_span_with_one_child_per_check(
    client: RedisClient, wis2l_telemetry: Captured
) -> None:
    cache = Cache(client, "health")

    async def reads_the_cache() -> Mapping[str, Any]:
        return {"value": await cache.get("k")}

    checker = HealthChecker(timeout=2.0)
    checker.add("redis", functools.partial(ping_check, client), critical=True)
    checker.add("cache", reads_the_cache)
    checker.add("outbox", fails)
    checker.add("slow", hangs, timeout=0.05)
    report = await checker.run()
    assert report.status is HealthStatus.DEGRADED

    run = wis2l_telemetry.span("health")
    assert (run.attributes or {})["wis2l.health.status"] == "degraded"
    assert (run.attributes or {})["wis2l.health.critical_only"] is False
    spans = {s.name: s for s in wis2l_telemetry.spans if s.name.startswith("health.check ")}
    assert set(spans) == {
        "health.check redis",
        "health.check cache",
        "health.check outbox",
        "health.check slow",
    }
    for span in spans.values():
        assert span.parent is not None
        assert span.parent.span_id == run.context.span_id
    redis = spans["health.check redis"]
    assert dict(redis.attributes or {}) == {
        "wis2l.health.check": "redis",
        "wis2l.health.check.critical": True,
    }
    assert redis.status.status_code is StatusCode.UNSET
    for name, error in [("outbox", "CheckFailed"), ("slow", "timeout")]:
        span = spans[f"health.check {name}"]
        assert span.status.status_code is StatusCode.ERROR
        assert (span.attributes or {})["error.type"] == error
    # The check's own Redis command is its child.
    get = wis2l_telemetry.span("GET")
    assert get.parent is not None
    assert get.parent.span_id == spans["health.check cache"].context.span_id

    assert gauges(wis2l_telemetry) == {"redis": 1.0, "cache": 1.0, "outbox": 0.5, "slow": 0.5}
    durations = {
        p.attributes["wis2l.health.check"]: p
        for p in wis2l_telemetry.points("wis2l.health.check.duration")
    }
    assert set(durations) == {"redis", "cache", "outbox", "slow"}
    assert durations["slow"].attributes["error.type"] == "timeout"
    assert 0.04 < durations["slow"].sum < 1.0
    assert "error.type" not in durations["redis"].attributes


async def test_a_critical_failure_is_zero_and_the_minimum_is_the_report(
    wis2l_telemetry: Captured,
) -> None:
    checker = HealthChecker(timeout=1.0)
    checker.add("database", fails, critical=True)
    checker.add("nats", passes)
    report = await checker.run()
    assert report.status is HealthStatus.UNHEALTHY
    assert gauges(wis2l_telemetry) == {"database": 0.0, "nats": 1.0}
    assert min(gauges(wis2l_telemetry).values()) == _health.status_value(
        healthy=False, critical=True
    )
    # Recovery sets the gauge back.
    checker.add("database", passes, critical=True)
    await checker.run(critical_only=True)
    assert gauges(wis2l_telemetry) == {"database": 1.0, "nats": 1.0}
    last = wis2l_telemetry.named("health")[-1]
    assert (last.attributes or {})["wis2l.health.critical_only"] is True
    assert (last.attributes or {})["wis2l.health.status"] == "ok"


async def test_redis_down_is_a_failed_check(settings: Settings, wis2l_telemetry: Captured) -> None:
    away = attrs.evolve(
        settings,
        redis_url=f"redis://127.0.0.1:{_closed_port()}/0",
        redis_connect_timeout=0.2,
        redis_socket_timeout=0.2,
    )
    client = RedisClient(away, retries=0)
    await client.open()
    try:
        checker = HealthChecker(timeout=1.0)
        checker.add("redis", functools.partial(ping_check, client))
        report = await checker.run()
    finally:
        await client.aclose()
    assert report.status is HealthStatus.DEGRADED
    span = wis2l_telemetry.span("health.check redis")
    assert (span.attributes or {})["error.type"] == "ServiceUnavailable"
    assert gauges(wis2l_telemetry) == {"redis": 0.5}


async def test_without_an_sdk_nothing_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    def make(meter: Any) -> Any:
        raise AssertionError("an instrument was made without an SDK")

    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("observed_run ran without an SDK")

    def wrap(*args: Any) -> Any:
        raise AssertionError("observed_check ran without an SDK")

    monkeypatch.setattr(_health, "_INSTRUMENTS", Instruments(make))
    monkeypatch.setattr(_health, "observed_run", refuse)
    monkeypatch.setattr(_health, "observed_check", wrap)
    checker = HealthChecker(timeout=1.0)
    checker.add("a", passes)
    checker.add("b", fails)
    assert (await checker.run()).status is HealthStatus.DEGRADED
