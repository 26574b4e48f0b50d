"""The bounded pool under the caches, and the one fail-open guard they all call."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import attrs
import pytest
from redis.asyncio import Redis
from tests.helpers import eventually

from wis2l_core import ServiceUnavailable, Settings
from wis2l_core._aio import cancel_and_wait
from wis2l_core.cache import Cache, RedisClient
from wis2l_core.cache._pool import BoundedPool


def pool_of(client: RedisClient) -> BoundedPool:
    pool = client.redis.connection_pool
    assert isinstance(pool, BoundedPool)
    return pool


async def sockets_named(observer: Redis, name: str) -> int:
    return sum(c.get("name") == name for c in await observer.client_list())


async def test_more_calls_than_connections_all_complete_within_the_bound(
    client: RedisClient, settings: Settings
) -> None:
    bounded = attrs.evolve(
        settings,
        namespace=f"{settings.namespace}b",
        redis_max_connections=3,
        redis_socket_timeout=10.0,
    )
    small = RedisClient(bounded)
    await small.open()
    name = f"wis2l-core:{bounded.namespace}"
    key = client.key("pool", "queue")  # in the fixture's namespace: cleaned up after
    seen: list[int] = []
    done = asyncio.Event()

    async def watch() -> None:
        # Stopped by an event, not a cancellation: a cancellation that lands in redis-py's
        # read can be swallowed (on Python 3.11), and this loop would then never end.
        while not done.is_set():
            seen.append(await sockets_named(client.redis, name))
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    try:
        # Ten blocking pops on three connections: three block in Redis, seven wait in
        # the pool (not an error), and each return hands the connection to the next.
        async def pop() -> Any:
            return await small.redis.blpop([key], timeout=8)

        pops = [asyncio.create_task(pop()) for _ in range(10)]
        await eventually(lambda: len(pool_of(small)._waiters) == 7)

        async def three_open() -> bool:
            return await sockets_named(client.redis, name) == 3

        await eventually(three_open)
        await client.redis.rpush(key, *range(10))
        results = await asyncio.gather(*pops)
        assert sorted(int(value) for _, value in results) == list(range(10))
        assert await sockets_named(client.redis, name) <= 3
        pool = pool_of(small)
        assert not pool._in_use_connections
        assert len(pool._available_connections) <= 3
    finally:
        done.set()
        await asyncio.wait_for(watcher, 10)
        await small.aclose()
    assert seen
    assert max(seen) <= 3


async def test_a_waiter_cancelled_after_it_was_handed_a_connection_passes_it_on(
    settings: Settings,
) -> None:
    small = RedisClient(attrs.evolve(settings, redis_max_connections=1))
    await small.open()
    pool = pool_of(small)
    try:
        held = await pool.get_connection()
        waiter = asyncio.create_task(pool.get_connection())
        await eventually(lambda: len(pool._waiters) == 1)
        await pool.release(held)  # handed straight to the waiter's future...
        waiter.cancel()  # ...which is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert not pool._in_use_connections
        assert pool._available_connections == [held]  # passed back, not lost
        assert await small.redis.ping()
    finally:
        await small.aclose()


async def test_an_exhausted_pool_fails_open_after_its_timeout(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="wis2l_core.cache")
    small = RedisClient(
        attrs.evolve(
            settings,
            redis_max_connections=1,
            redis_socket_timeout=0.1,
            redis_connect_timeout=0.1,
        )
    )
    await small.open()
    pool = pool_of(small)
    cache = Cache(small, "x", ttl=60)
    try:
        held = await pool.get_connection()
        assert await cache.get("k") is None  # waited for a connection, then a miss
        assert small.degraded
        await pool.release(held)
        assert not pool._waiters
        assert not pool._in_use_connections
    finally:
        await small.aclose()


async def test_the_guard_returns_the_default_and_reports(client: RedisClient) -> None:
    key = client.key("x", "list")
    await client.redis.lpush(key, "a")
    # A per-command error: the default, and the breaker stays closed.
    assert await client.call("get", "fallback", Redis.get, key) == "fallback"
    assert client.available
    assert await client.call("get", "fallback", Redis.lrange, key, 0, -1) == [b"a"]


async def test_the_guard_never_swallows_cancellation(client: RedisClient) -> None:
    started = asyncio.Event()

    async def slow(redis: Redis) -> Any:
        started.set()
        await asyncio.sleep(30)

    task = asyncio.create_task(client.call("slow", None, slow))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert client.available  # a cancellation is not an outage


async def test_the_strict_guard_raises_with_the_cause(settings: Settings) -> None:
    closed = RedisClient(settings)
    with pytest.raises(ServiceUnavailable) as info:
        await closed.call_strict("get", Redis.get, "k")  # not open: nothing to ask
    assert info.value.service == "redis"


async def test_a_cancellation_redis_py_swallows_is_raised_again(settings: Settings) -> None:
    """Python 3.11's ``asyncio.wait_for`` inside redis-py can swallow a cancellation that
    lands as the reply arrives (gh-86296); a cache call must not return as if nothing
    happened. Without the guard's check, about 1 in 3 of these cancellations was lost."""
    client = RedisClient(settings)
    await client.open()
    cache = Cache(client, "cancel")
    rng = random.Random(11)
    lost = 0
    try:
        for _ in range(150):

            async def loop() -> None:
                while True:
                    await cache.exists("k")
                    await asyncio.sleep(0.001)

            task = asyncio.create_task(loop())
            await asyncio.sleep(rng.uniform(0, 0.015))
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=2.0)
            if not done:  # the loop went on: the cancellation was lost
                lost += 1
                await cancel_and_wait(task)
            else:
                assert task.cancelled()
    finally:
        await client.aclose()
    assert lost == 0
