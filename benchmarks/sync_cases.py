"""``wis2l_core.sync`` against the raw synchronous drivers: psycopg and redis-py.

The synchronous runtime runs on the run's database, namespace and stream (no relay: the
cases do not write). Each operation is a plain blocking call; the harness awaits a thin
coroutine around it, the same for the library and the raw side, so the ratio is the
synchronous calls' own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import orjson
import psycopg
import redis
from psycopg.rows import DictRow
from psycopg_pool import ConnectionPool

from benchmarks.cache_bus_cases import VALUE
from benchmarks.db_cases import FIND_USER
from benchmarks.env import Env
from benchmarks.harness import Config, Op, Result, Target, measure
from wis2l_core.sync import Wis2l
from wis2l_core.sync._pool import configure_connection, sync_connect_kwargs

__all__ = ["run"]

Conn = psycopg.Connection[DictRow]


def _op(fn: Callable[[], Any]) -> Op:
    async def op() -> Any:
        return fn()

    return op


async def find_by_id(env: Env, wis: Wis2l, config: Config) -> Result:
    """``sync users.find_by_id`` vs the SELECT on a raw sync connection and pool."""
    res = Result("sync users.find_by_id")
    user_id = env.user_id
    kwargs = sync_connect_kwargs(env.settings)  # psycopg's own sync cursor
    conn: Conn = psycopg.Connection.connect(env.settings.database_url, **kwargs)
    configure_connection(conn)
    pool: ConnectionPool[Conn] = ConnectionPool(
        env.settings.database_url,
        connection_class=psycopg.Connection[DictRow],
        kwargs=kwargs,
        min_size=2,
        max_size=10,
        configure=configure_connection,
        open=False,
    )
    pool.open(wait=True)

    def raw_held() -> object:
        return conn.execute(FIND_USER, (user_id,), prepare=True).fetchone()

    def raw_pooled() -> object:
        with pool.connection() as c:
            return c.execute(FIND_USER, (user_id,), prepare=True).fetchone()

    ops = {
        "library (sync)": _op(lambda: wis.users.find_by_id(user_id)),
        "raw sync psycopg (held conn)": _op(raw_held),
        "raw sync psycopg (pool)": _op(raw_pooled),
    }
    try:
        res.ops = await measure(ops, iterations=config.n(300), config=config)
    finally:
        conn.close()
        pool.close()
    ratio = res.ratio("library / raw pool", "library (sync)", "raw sync psycopg (pool)")
    res.ratio("library / raw held conn", "library (sync)", "raw sync psycopg (held conn)")
    res.targets.append(Target("ratio vs raw pool", ratio, 1.15, "<=", ratio="library / raw pool"))
    res.notes = (
        "wis2l_core.sync.Wis2l (generated repository on psycopg_pool.ConnectionPool) vs"
        " raw sync psycopg: dict_row, prepare=True, the library's connection settings"
    )
    return res


async def cache_get(env: Env, wis: Wis2l, config: Config) -> Result:
    """``sync cache.get`` vs redis-py's sync ``GET`` + ``orjson.loads``."""
    res = Result("sync cache.get")
    wis.cache.set("bench-sync", VALUE)
    key = wis.cache.key("bench-sync")
    raw: redis.Redis = redis.Redis.from_url(env.settings.redis_url)

    def raw_get() -> object:
        data = raw.get(key)
        return None if data is None else orjson.loads(data)

    ops = {
        "library (sync)": _op(lambda: wis.cache.get("bench-sync")),
        "raw sync redis-py": _op(raw_get),
    }
    try:
        res.ops = await measure(ops, iterations=config.n(400), config=config)
    finally:
        raw.close()
    ratio = res.ratio("library / raw", "library (sync)", "raw sync redis-py")
    res.targets.append(Target("ratio vs raw", ratio, 1.15, "<=", ratio="library / raw"))
    res.notes = (
        "wis2l_core.sync cache (generated Cache behind the fail-open guard, over a"
        " BlockingConnectionPool) vs redis.Redis.from_url (default ConnectionPool)"
    )
    return res


async def run(env: Env, config: Config) -> list[Result]:
    """The synchronous API's cases."""
    wis = Wis2l(env.settings, relay=False)
    wis.start()
    try:
        return [await find_by_id(env, wis, config), await cache_get(env, wis, config)]
    finally:
        with contextlib.suppress(Exception):
            wis.close()
