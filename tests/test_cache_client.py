"""RedisClient: lifecycle, ping, key naming, the breaker, failing open, cancellation."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time

import attrs
import pytest
from tests.helpers import has

from wis2l_core import ConfigError, ServiceUnavailable, Settings
from wis2l_core.cache import Cache, RedisClient


def dead_url() -> str:
    """A loopback URL where nothing listens (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


async def test_open_makes_no_connection_and_is_idempotent() -> None:
    client = RedisClient(Settings(redis_url=dead_url(), namespace="tdead"))
    assert not client.available
    await client.open()  # Redis down: open() still succeeds
    redis = client.redis
    await client.open()
    assert client.redis is redis
    await client.aclose()
    await client.aclose()
    with pytest.raises(ServiceUnavailable, check=has(service="redis")):
        _ = client.redis


async def test_ping_and_available(client: RedisClient) -> None:
    await client.ping()
    assert client.available
    assert not client.degraded


async def test_ping_on_a_dead_server_raises_service_unavailable() -> None:
    client = RedisClient(Settings(redis_url=dead_url(), namespace="tdead"))
    await client.open()
    try:
        with pytest.raises(ServiceUnavailable) as info:
            await client.ping()
        assert info.value.service == "redis"
        assert info.value.__cause__ is not None
        assert not client.available
    finally:
        await client.aclose()


async def test_ping_on_a_closed_client_raises(settings: Settings) -> None:
    with pytest.raises(ServiceUnavailable, check=has(service="redis")):
        await RedisClient(settings).ping()


def test_keys_are_namespaced(settings: Settings) -> None:
    client = RedisClient(settings)
    assert client.key("build", "abc") == f"{settings.namespace}:build:abc"
    assert RedisClient(Settings()).key("x", "y") == "wis2l:x:y"


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://127.0.0.1:26379",  # no master name
        "redis+cluster://127.0.0.1:7000/3",  # a cluster has only database 0
        "redis-cluster://127.0.0.1:7000",
        "http://127.0.0.1:6379",
    ],
)
def test_unknown_or_malformed_redis_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings(redis_url=url)
    assert info.value.variable == "redis_url"


async def test_unix_socket_url_is_accepted() -> None:
    client = RedisClient(Settings(redis_url="unix:///nonexistent/redis.sock?db=0"))
    await client.open()
    try:
        assert await Cache(client, "x").get("k") is None  # fails open, does not raise
    finally:
        await client.aclose()


@pytest.mark.timing
async def test_dead_redis_fails_open_fast_logs_once_and_breaker_skips(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="wis2l_core.cache")
    client = RedisClient(Settings(redis_url=dead_url(), namespace="tdead"), breaker_seconds=0.3)
    await client.open()
    cache = Cache(client, "x", ttl=60)
    try:
        started = time.perf_counter()
        for _ in range(100):
            assert await cache.get("k") is None
            assert await cache.set("k", 1) is False
            assert await cache.exists("k") is False
            assert await cache.delete("k") is False
            assert await cache.invalidate("k") is False
        elapsed = time.perf_counter() - started
        assert elapsed < 1.0, elapsed  # the breaker skips Redis: no 500 connection attempts
        assert not client.available
        assert client.degraded
        await asyncio.sleep(0.35)  # past the breaker: one probe, which fails again
        assert await cache.get("k") is None
        warnings = [r for r in caplog.records if r.name == "wis2l_core.cache"]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert "unavailable" in warnings[0].getMessage()
    finally:
        await client.aclose()


async def test_recovery_is_logged_and_closes_the_breaker(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wis2l_core.cache")
    client = RedisClient(settings, breaker_seconds=0.2)
    await client.open()
    try:
        client.report_failure(ConnectionRefusedError("simulated"), op="get")
        cache = Cache(client, "x", ttl=60)
        assert await cache.set("k", 1) is False  # breaker open: skipped
        await asyncio.sleep(0.25)
        assert await cache.set("k", 1) is True  # the probe goes through
        assert client.available
        assert await cache.get("k") == 1
        messages = [r.getMessage() for r in caplog.records if r.name == "wis2l_core.cache"]
        assert len(messages) == 2
        assert "available again" in messages[1]
    finally:
        await client.aclose()


async def test_a_command_error_does_not_open_the_breaker(client: RedisClient) -> None:
    cache = Cache(client, "x")
    await client.redis.lpush(cache.key("list"), "a")
    assert await cache.get("list") is None  # WRONGTYPE: a miss, not an outage
    assert client.available
    assert await cache.set("other", 1) is True


@pytest.mark.timing
async def test_cancelled_calls_leave_the_pool_consistent(settings: Settings) -> None:
    client = RedisClient(attrs.evolve(settings, redis_max_connections=8))
    await client.open()
    cache = Cache(client, "x", ttl=60)
    try:
        values = {f"k{i}": {"i": i, "pad": "x" * (i * 97 % 5000)} for i in range(40)}
        for key, value in values.items():
            assert await cache.set(key, value)
        rng = random.Random(5)
        cancelled = 0
        for _ in range(10):
            tasks = [asyncio.create_task(cache.get(rng.choice(list(values)))) for _ in range(200)]
            await asyncio.sleep(rng.uniform(0, 0.003))
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            cancelled += sum(isinstance(r, asyncio.CancelledError) for r in results)
        assert cancelled > 1000  # most were cut off while waiting, sending or reading
        # Every connection is back in the pool and in step: more concurrent reads than
        # connections each get their own value, and none waits out the pool timeout.
        keys = list(values) * 3
        started = time.perf_counter()
        got = await asyncio.gather(*(cache.get(k) for k in keys))
        assert got == [values[k] for k in keys]
        assert time.perf_counter() - started < 1.0
        assert client.available
    finally:
        await client.aclose()


async def test_cluster_and_sentinel_urls_build_their_clients_without_io() -> None:
    from redis.asyncio.cluster import RedisCluster

    cluster = RedisClient(
        Settings(redis_url="redis+cluster://ada:s%40cret@127.0.0.1:1,127.0.0.1:2", namespace="tc")
    )
    await cluster.open()  # makes no connection: nothing listens on these ports
    try:
        assert cluster.mode == "cluster"
        assert isinstance(cluster.redis, RedisCluster)
        seeds = {(n.host, n.port) for n in cluster.redis.nodes_manager.startup_nodes.values()}
        assert seeds == {("127.0.0.1", 1), ("127.0.0.1", 2)}
        kwargs = cluster.redis.nodes_manager.connection_kwargs
        assert (kwargs["username"], kwargs["password"]) == ("ada", "s@cret")
        assert await Cache(cluster, "x").get("k") is None  # fails open, does not raise
    finally:
        await cluster.aclose()
    sentinel = RedisClient(
        Settings(
            redis_url="redis+sentinel://:pw@127.0.0.1:1,127.0.0.1:2/mymaster/3", namespace="ts"
        )
    )
    await sentinel.open()
    try:
        assert sentinel.mode == "sentinel"
        pool = sentinel.redis.connection_pool
        assert pool.service_name == "mymaster"  # type: ignore[attr-defined]
        assert pool.connection_kwargs["db"] == 3
        assert pool.connection_kwargs["password"] == "pw"
        assert "pw" not in repr(sentinel)
        with pytest.raises(ServiceUnavailable, check=has(service="redis")):  # no Sentinel answers
            await sentinel.ping()
    finally:
        await sentinel.aclose()
