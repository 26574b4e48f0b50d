"""RateLimiter: exact under concurrency (tasks and processes), refill, fail modes."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from datetime import timedelta
from typing import Any

import pytest
from tests.helpers import field_is, has

from wis2l_core import ServiceUnavailable, Settings, ValidationError
from wis2l_core.cache import RateLimiter, RedisClient


async def test_30_concurrent_hits_with_limit_10_allow_exactly_10(client: RedisClient) -> None:
    limiter = RateLimiter(client)
    results = await asyncio.gather(*(limiter.hit("k", limit=10, per=60) for _ in range(30)))
    allowed = [r for r in results if r.allowed]
    assert len(allowed) == 10
    assert sorted(r.remaining for r in allowed) == list(range(10))
    for refused in (r for r in results if not r.allowed):
        assert refused.remaining == 0
        assert 5.5 < refused.retry_after <= 6.0  # one hit comes back every 60 / 10 s
        assert refused.limit == 10


async def test_first_hit_and_key_ttl(client: RedisClient) -> None:
    limiter = RateLimiter(client)
    first = await limiter.hit("login:10.0.0.1", limit=5, per=timedelta(seconds=10))
    assert first.allowed
    assert first.remaining == 4
    assert first.retry_after == 0
    assert first.reset_after == pytest.approx(2.0, abs=0.01)  # one hit's share of 10 s
    key = f"{client.namespace}:ratelimit:login:10.0.0.1"
    assert 1_900 < await client.redis.pttl(key) <= 2_000


async def test_keys_are_independent(client: RedisClient) -> None:
    limiter = RateLimiter(client)
    assert (await limiter.hit("a", limit=1, per=60)).allowed
    assert not (await limiter.hit("a", limit=1, per=60)).allowed
    assert (await limiter.hit("b", limit=1, per=60)).allowed


async def test_a_limit_finer_than_a_millisecond(client: RedisClient) -> None:
    # one hit's share of the period rounds to 0 ms on Redis' clock: the key still gets
    # a 1 ms expiry, where it used to be "SET ... PX 0" and "invalid expire time"
    limiter = RateLimiter(client, fail_mode="raise")  # a script error is not swallowed
    results = [await limiter.hit("fine", limit=10**9, per=1) for _ in range(3)]
    assert all(r.allowed for r in results)


@pytest.mark.timing
async def test_hits_come_back_over_time(client: RedisClient) -> None:
    limiter = RateLimiter(client)
    for _ in range(4):
        assert (await limiter.hit("k", limit=4, per=0.4)).allowed
    refused = await limiter.hit("k", limit=4, per=0.4)
    assert not refused.allowed
    await asyncio.sleep(refused.retry_after + 0.02)
    assert (await limiter.hit("k", limit=4, per=0.4)).allowed
    assert not (await limiter.hit("k", limit=4, per=0.4)).allowed
    await asyncio.sleep(0.45)  # fully recovered
    assert (await limiter.hit("k", limit=4, per=0.4)).remaining == 3


async def test_cost(client: RedisClient) -> None:
    limiter = RateLimiter(client)
    assert (await limiter.hit("k", limit=10, per=60, cost=7)).remaining == 3
    assert not (await limiter.hit("k", limit=10, per=60, cost=4)).allowed
    assert (await limiter.hit("k", limit=10, per=60, cost=3)).allowed


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"limit": 0, "per": 1}, "limit"),
        ({"limit": 5, "per": 0}, "per"),
        ({"limit": 5, "per": -1}, "per"),
        ({"limit": 5, "per": 1, "cost": 6}, "cost"),
        ({"limit": 5, "per": 1, "cost": 0}, "cost"),
        ({"limit": 5, "per": "1"}, "per"),
    ],
)
async def test_bad_arguments(client: RedisClient, kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        await RateLimiter(client).hit("k", **kwargs)
    assert info.value.field == field


def dead_client() -> RedisClient:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return RedisClient(Settings(redis_url=f"redis://127.0.0.1:{port}/0", namespace="tdead"))


async def test_fail_modes_when_redis_is_down() -> None:
    client = dead_client()
    await client.open()
    try:
        for _ in range(2):  # the first reaches Redis, the second finds the breaker open
            opened = await RateLimiter(client).hit("k", limit=3, per=1)
            assert opened.allowed
            assert opened.remaining == 3
            closed = await RateLimiter(client, fail_mode="closed").hit("k", limit=3, per=1)
            assert not closed.allowed
            assert closed.retry_after > 0
            with pytest.raises(ServiceUnavailable, check=has(service="redis")):
                await RateLimiter(client, fail_mode="raise").hit("k", limit=3, per=1)
    finally:
        await client.aclose()
    with pytest.raises(ValidationError, check=field_is("fail_mode")):
        RateLimiter(client, fail_mode="sometimes")  # type: ignore[arg-type]


CHILD = """
import asyncio, json, sys, time
from wis2l_core import Settings
from wis2l_core.cache import RateLimiter, RedisClient

async def main():
    url, namespace, start = sys.argv[1:4]
    client = RedisClient(Settings(redis_url=url, namespace=namespace))
    await client.open()
    limiter = RateLimiter(client)
    await client.ping()
    await asyncio.sleep(max(0.0, float(start) - time.time()))
    results = await asyncio.gather(*(limiter.hit("shared", limit=10, per=60) for _ in range(15)))
    print(json.dumps(sum(r.allowed for r in results)))
    await client.aclose()

asyncio.run(main())
"""


@pytest.mark.slow
async def test_exact_across_processes(client: RedisClient, settings: Settings) -> None:
    start = time.time() + 3.0
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CHILD,
            settings.redis_url,
            settings.namespace,
            str(start),
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(3)
    ]
    outs = [(await p.communicate())[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert sum(json.loads(out) for out in outs) == 10  # 45 hits at once, 10 allowed
