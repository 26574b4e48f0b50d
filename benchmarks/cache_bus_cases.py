"""The generic cache against raw redis-py, and ``bus.publish`` against raw nats-py."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import nats
import orjson
from redis.asyncio import BlockingConnectionPool, Redis

from benchmarks.env import Env
from benchmarks.harness import Config, Result, Target, measure
from wis2l_core.events import BuildProgress

__all__ = ["run"]

VALUE = {
    "id": "0190d6a8-5c1e-7c4e-9d2b-3f5a6b7c8d9e",
    "name": "Player controller",
    "tags": ["movement", "input", "physics"],
    "size": 1234,
    "ok": True,
}


async def cache_get(env: Env, config: Config) -> Result:
    """``wis.cache.get`` vs redis-py ``GET`` + ``orjson.loads`` (a hit, ~120-byte JSON)."""
    res = Result("cache.get")
    await env.wis.cache.set("bench", VALUE)
    key = env.wis.cache.key("bench")
    raw_redis: Redis = Redis.from_url(env.settings.redis_url)
    blocking: Redis = Redis.from_pool(
        BlockingConnectionPool.from_url(env.settings.redis_url, max_connections=50, timeout=1.0)
    )
    try:

        async def library() -> object:
            return await env.wis.cache.get("bench")

        async def raw() -> object:
            data = await raw_redis.get(key)
            return None if data is None else orjson.loads(data)

        async def raw_blocking() -> object:
            data = await blocking.get(key)
            return None if data is None else orjson.loads(data)

        res.ops = await measure(
            {
                "library": library,
                "raw redis-py": raw,
                "raw redis-py (BlockingConnectionPool)": raw_blocking,
            },
            iterations=config.n(400),
            config=config,
        )
    finally:
        await raw_redis.aclose()
        await blocking.aclose()
    ratio = res.ratio("library / raw", "library", "raw redis-py")
    res.ratio("library / raw blocking pool", "library", "raw redis-py (BlockingConnectionPool)")
    res.targets.append(Target("ratio vs raw", ratio, 1.15, "<=", ratio="library / raw"))
    res.notes = (
        "raw: redis.asyncio.Redis.from_url (default ConnectionPool; hiredis parser installed);"
        " a second raw client uses redis-py's BlockingConnectionPool, which the library's"
        " bounded pool (wis2l_core.cache._pool.BoundedPool) replaced: same bound and wait,"
        " no lock or timer when a connection is idle"
    )
    return res


async def bus_publish(env: Env, config: Config) -> Result:
    """``wis.bus.publish`` vs nats-py ``js.publish`` of the same bytes and header."""
    res = Result("bus.publish")
    pid = env.project_id
    subject = env.wis.bus.subject(BuildProgress)
    nc = await nats.connect(list(env.settings.nats_urls))
    js = nc.jetstream()
    try:

        async def library() -> None:
            await env.wis.bus.publish(BuildProgress(project_id=pid, build_id=pid, progress=50))

        source = f"/wis2l-core/{env.settings.namespace}"

        async def raw() -> None:
            # The same wire message by hand: the JSON body and the CloudEvents headers.
            id_ = str(uuid.uuid4())
            now = datetime.now(UTC).isoformat()
            body = {
                "id": id_,
                "occurred_at": now,
                "project_id": str(pid),
                "build_id": str(pid),
                "progress": 50,
                "type": "build.progress",
            }
            headers = {
                "ce-specversion": "1.0",
                "ce-type": "wis2l.build.progress",
                "ce-source": source,
                "ce-id": id_,
                "ce-time": now,
                "ce-datacontenttype": "application/json",
                "content-type": "application/json",
                "Nats-Msg-Id": id_,
            }
            await js.publish(subject, orjson.dumps(body), headers=headers)

        res.ops = await measure(
            {"library": library, "raw nats-py": raw}, iterations=config.n(300), config=config
        )
    finally:
        await nc.close()
    ratio = res.ratio("library / raw", "library", "raw nats-py")
    res.targets.append(Target("ratio vs raw", ratio, 1.1, "<=", ratio="library / raw"))
    res.notes = (
        "library: builds the typed event (id, occurred_at; checked as it is built), encodes"
        " it and its CloudEvents headers, writes HPUB through events/_publish.py; raw: the"
        " same body and headers built by hand as a dict and orjson-encoded, js.publish;"
        " both wait for the JetStream ack"
    )
    return res


async def run(env: Env, config: Config) -> list[Result]:
    """The cache and bus cases."""
    return [await cache_get(env, config), await bus_publish(env, config)]
