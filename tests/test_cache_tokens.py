"""TokenCache: single flight in one process and across processes, TTL jitter, invalidation."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from wis2l_core import DesignToken, Settings, TokenCategory
from wis2l_core.cache import RedisClient, TokenCache

HOUR_MS = 3600 * 1000


def tokens(project_id: UUID, n: int = 3) -> list[DesignToken]:
    now = datetime(2025, 5, 6, 7, 8, 9, tzinfo=UTC)
    return [
        DesignToken(
            id=UUID(int=i + 1),
            project_id=project_id,
            name=f"color.{i}",
            category=TokenCategory.COLOR,
            group=None,
            value=f"#00000{i}",
            version=1,
            created_at=now,
            updated_at=now,
        )
        for i in range(n)
    ]


class Loader:
    """Counts its calls; slow enough that concurrent callers overlap."""

    def __init__(self, value: Any, delay: float = 0.05) -> None:
        self.value = value
        self.delay = delay
        self.calls = 0

    async def __call__(self) -> Any:
        self.calls += 1
        await asyncio.sleep(self.delay)
        return self.value


async def test_50_concurrent_misses_load_once(client: RedisClient) -> None:
    cache = TokenCache(client)
    project = uuid4()
    load = Loader(tokens(project))
    results = await asyncio.gather(
        *(cache.get_or_load(project, load, type=list[DesignToken]) for _ in range(50))
    )
    assert load.calls == 1
    assert all(r == tokens(project) for r in results)
    # A hit, through a fresh cache (no in-process state): built back into models.
    again = await TokenCache(client).get_or_load(project, load, type=list[DesignToken])
    assert again == tokens(project)
    assert load.calls == 1


async def test_ttl_has_jitter_within_one_hour(client: RedisClient) -> None:
    cache = TokenCache(client)
    ttls = []
    for _ in range(20):
        project = uuid4()
        await cache.get_or_load(project, Loader([], delay=0))
        ttls.append(await client.redis.pttl(cache.key(project)))
    assert all(0.9 * HOUR_MS - 1_000 <= t <= HOUR_MS for t in ttls), ttls
    assert len(set(ttls)) > 10  # spread out, not one expiry for all


async def test_untyped_returns_json_on_miss_and_hit(client: RedisClient) -> None:
    cache = TokenCache(client)
    project = uuid4()
    load = Loader(tokens(project, 1))
    miss = await cache.get_or_load(project, load)
    hit = await cache.get_or_load(project, load)
    assert miss == hit
    assert hit[0]["created_at"] == "2025-05-06T07:08:09+00:00"
    assert load.calls == 1


async def test_a_none_result_is_cached_too(client: RedisClient) -> None:
    cache = TokenCache(client)
    project = uuid4()
    load = Loader(None, delay=0)
    assert await cache.get_or_load(project, load) is None
    assert await cache.get_or_load(project, load) is None
    assert load.calls == 1


@pytest.mark.timing
async def test_loader_error_reaches_every_caller_and_is_not_cached(client: RedisClient) -> None:
    cache = TokenCache(client, lock_ttl=timedelta(seconds=30))
    project = uuid4()
    calls = 0

    async def failing() -> list[str]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        raise RuntimeError("database says no")

    results = await asyncio.gather(
        *(cache.get_or_load(project, failing) for _ in range(10)), return_exceptions=True
    )
    assert calls == 1
    assert all(isinstance(r, RuntimeError) for r in results)
    assert not await client.redis.exists(cache.key(project))
    # The lock was released: the next caller loads at once, not after lock_ttl.
    started = time.perf_counter()
    assert await cache.get_or_load(project, Loader(["ok"], delay=0)) == ["ok"]
    assert time.perf_counter() - started < 1.0


async def test_a_cancelled_caller_does_not_cancel_the_load(client: RedisClient) -> None:
    cache = TokenCache(client)
    project = uuid4()
    load = Loader(["v"], delay=0.2)
    first = asyncio.create_task(cache.get_or_load(project, load))
    second = asyncio.create_task(cache.get_or_load(project, load))
    await asyncio.sleep(0.05)
    first.cancel()
    assert await second == ["v"]
    assert first.cancelled()
    assert load.calls == 1
    assert await client.redis.exists(cache.key(project))


async def test_invalidate(client: RedisClient) -> None:
    cache = TokenCache(client)
    project = uuid4()
    await cache.get_or_load(project, Loader(["old"], delay=0))
    assert await cache.invalidate(project) is True
    assert not await client.redis.exists(cache.key(project))
    assert await cache.get_or_load(project, Loader(["new"], delay=0)) == ["new"]


async def test_a_load_racing_an_invalidation_does_not_store_stale_data(
    client: RedisClient,
) -> None:
    cache = TokenCache(client)
    project = uuid4()
    slow = asyncio.create_task(cache.get_or_load(project, Loader(["stale"], delay=0.3)))
    await asyncio.sleep(0.1)  # the load has read the "database"
    assert await cache.invalidate(project)
    assert await slow == ["stale"]  # its caller asked before the change
    assert not await client.redis.exists(cache.key(project))  # but it was not cached
    assert await cache.get_or_load(project, Loader(["fresh"], delay=0)) == ["fresh"]
    assert await TokenCache(client).get_or_load(project, Loader(["x"], delay=0)) == ["fresh"]


async def test_redis_down_calls_the_loader_and_never_raises() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = RedisClient(Settings(redis_url=f"redis://127.0.0.1:{port}/0", namespace="tdead"))
    await client.open()
    try:
        cache = TokenCache(client)
        project = uuid4()
        load = Loader(tokens(project), delay=0.3)  # outlasts the failing GETs' retries
        results = await asyncio.gather(
            *(cache.get_or_load(project, load, type=list[DesignToken]) for _ in range(20))
        )
        assert results == [tokens(project)] * 20
        assert load.calls == 1  # still one load per process for concurrent misses
        assert await cache.invalidate(project) is False
    finally:
        await client.aclose()


CHILD = """
import asyncio, json, os, sys, time, uuid
from datetime import timedelta
from wis2l_core import Settings
from wis2l_core.cache import RedisClient, TokenCache

async def main():
    url, namespace, project, start, delay = sys.argv[1:6]
    client = RedisClient(Settings(redis_url=url, namespace=namespace))
    await client.open()
    cache = TokenCache(client, lock_ttl=timedelta(seconds=1))

    async def loader():
        await client.redis.incr(f"{namespace}:test:loads")
        print("loading", flush=True)
        await asyncio.sleep(float(delay))
        return {"pid": os.getpid()}

    await asyncio.sleep(max(0.0, float(start) - time.time()))
    value = await cache.get_or_load(uuid.UUID(project), loader)
    print(json.dumps(value), flush=True)
    await client.aclose()

asyncio.run(main())
"""


async def spawn(settings: Settings, project: UUID, start: float, delay: float) -> Any:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        settings.redis_url,
        settings.namespace,
        str(project),
        str(start),
        str(delay),
        stdout=asyncio.subprocess.PIPE,
    )


@pytest.mark.slow
async def test_two_processes_load_once(client: RedisClient, settings: Settings) -> None:
    project = uuid4()
    start = time.time() + 3.0  # both are imported and connected by then
    procs = [await spawn(settings, project, start, delay=0.5) for _ in range(2)]
    outputs = [(await p.communicate())[0].decode().split("\n") for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert await client.redis.get(f"{settings.namespace}:test:loads") == b"1"
    values = [json.loads(next(line for line in out if line.startswith("{"))) for out in outputs]
    assert values[0] == values[1]
    assert sum(out.count("loading") for out in outputs) == 1


@pytest.mark.timing
@pytest.mark.slow
async def test_a_dead_lock_holder_is_taken_over(client: RedisClient, settings: Settings) -> None:
    project = uuid4()
    holder = await spawn(settings, project, time.time(), delay=60)
    try:
        assert holder.stdout is not None
        line = await asyncio.wait_for(holder.stdout.readline(), timeout=20)
        assert line.strip() == b"loading"  # it holds the lock now
        holder.send_signal(signal.SIGKILL)
        await holder.wait()
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()
    cache = TokenCache(client, lock_ttl=timedelta(seconds=1))
    load = Loader({"pid": "taker"}, delay=0)
    started = time.perf_counter()
    assert await cache.get_or_load(project, load) == {"pid": "taker"}
    took = time.perf_counter() - started
    assert load.calls == 1
    assert took < 2.5, took  # within about lock_ttl, far below wait_timeout (10 s)
    assert await client.redis.get(f"{settings.namespace}:test:loads") == b"1"
