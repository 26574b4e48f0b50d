"""Repository calls against the same SQL on raw psycopg.

Raw baselines use what a developer wiring psycopg by hand would: ``dict_row`` rows
(named columns), ``prepare=True``, and either one held connection or a
``psycopg_pool.AsyncConnectionPool`` with the same connection settings as the library.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from benchmarks.env import Env
from benchmarks.harness import Config, Result, Target, measure
from wis2l_core.db.connect import connect_kwargs
from wis2l_core.db.pool import configure_connection
from wis2l_core.db.sql import query_file
from wis2l_core.ids import uuid7

__all__ = ["run"]

Conn = psycopg.AsyncConnection[DictRow]

FIND_USER = "SELECT id, email, name, subject, role, created_at, updated_at FROM users WHERE id = %s"
INSERT_COMPONENT = (
    "INSERT INTO components (id, project_id, name, language, code, prompt, model, experts,"
    " metadata) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " RETURNING id, project_id, name, language, code, prompt, model, experts, metadata,"
    " version, created_at, updated_at"
)
UPSERT_TOKEN = (
    "INSERT INTO design_tokens AS t (id, project_id, name, category, group_name, value)"
    " VALUES (%s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (project_id, name) DO UPDATE SET category = EXCLUDED.category,"
    " group_name = EXCLUDED.group_name, value = EXCLUDED.value, version = t.version + 1"
    " WHERE t.value IS DISTINCT FROM EXCLUDED.value"
)
CODE = "extends Node2D\n\nfunc _ready():\n    print('hello')\n" * 4


async def connect(env: Env) -> Conn:
    """One raw connection with the library's connection settings (orjson JSON, autocommit)."""
    conn: Conn = await psycopg.AsyncConnection.connect(
        env.settings.database_url, **connect_kwargs(env.settings)
    )
    await configure_connection(conn)
    return conn


@asynccontextmanager
async def raw_pool(env: Env) -> AsyncIterator[AsyncConnectionPool[Conn]]:
    """A raw psycopg_pool pool sized like the library's."""
    pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
        env.settings.database_url,
        kwargs=connect_kwargs(env.settings),
        min_size=2,
        max_size=10,
        configure=configure_connection,
        open=False,
    )
    await pool.open(wait=True)
    try:
        yield pool
    finally:
        await pool.close()


async def users_find_by_id(env: Env, config: Config) -> Result:
    """``users.find_by_id`` vs the SELECT on a held connection and through a pool."""
    res = Result("users.find_by_id")
    user_id = env.user_id
    conn = await connect(env)
    try:
        async with raw_pool(env) as pool:

            async def library() -> object:
                return await env.wis.users.find_by_id(user_id)

            async def raw_held() -> object:
                cur = await conn.execute(FIND_USER, (user_id,), prepare=True)
                return await cur.fetchone()

            async def raw_pooled() -> object:
                async with pool.connection() as c:
                    cur = await c.execute(FIND_USER, (user_id,), prepare=True)
                    return await cur.fetchone()

            res.ops = await measure(
                {"library": library, "raw (held conn)": raw_held, "raw (pool)": raw_pooled},
                iterations=config.n(300),
                config=config,
            )
    finally:
        await conn.close()
    vs_pool = res.ratio("library / raw pool", "library", "raw (pool)")
    res.ratio("library / raw held conn", "library", "raw (held conn)")
    res.ratio("raw pool / raw held conn", "raw (pool)", "raw (held conn)")
    res.targets.append(Target("ratio vs raw pool", vs_pool, 1.10, "<=", ratio="library / raw pool"))
    res.notes = "raw: dict_row, prepare=True; the target is judged against the pooled baseline"
    return res


async def components_create(env: Env, config: Config) -> Result:
    """``components.create`` (row + outbox event) vs two INSERTs in one raw transaction."""
    res = Result("components.create")
    pid = env.project_id
    outbox = query_file("events")["insert_outbox"].text
    conn = await connect(env)
    await env.wis.relay.stop(5)  # its work (measured in the outbox cases) would add noise
    try:

        async def library() -> object:
            return await env.wis.components.create(
                project_id=pid, name="Player", language="gdscript", code=CODE, model="m"
            )

        async def raw_on(c: Conn) -> object:
            id_, event_id = uuid7(), uuid7()
            payload = {
                "id": str(event_id),
                "type": "component.created",
                "occurred_at": datetime.now(UTC).isoformat(),
                "project_id": str(pid),
                "component_id": str(id_),
                "name": "Player",
                "language": "gdscript",
                "version": 1,
            }
            event = {
                "id": event_id,
                "type": "component.created",
                "subsystem": "spark",
                "project_id": pid,
                "subject": "component.created",
                "payload": Jsonb(payload),
                "trace_context": None,
            }
            async with c.pipeline(), c.transaction():
                cur = await c.execute(
                    INSERT_COMPONENT,
                    (id_, pid, "Player", "gdscript", CODE, None, "m", [], Jsonb({})),
                    prepare=True,
                )
                await c.execute(outbox, event, prepare=True)
            return await cur.fetchone()

        async with raw_pool(env) as pool:

            async def raw() -> object:
                return await raw_on(conn)

            async def raw_pooled() -> object:
                async with pool.connection() as c:
                    return await raw_on(c)

            res.ops = await measure(
                {"library": library, "raw (held conn)": raw, "raw (pool)": raw_pooled},
                iterations=config.n(150),
                config=config,
            )
    finally:
        await conn.close()
        await env.wis.relay.start()
    ratio = res.ratio("library / raw", "library", "raw (held conn)")
    res.ratio("library / raw pool", "library", "raw (pool)")
    res.targets.append(Target("ratio vs raw", ratio, 1.15, "<=", ratio="library / raw"))
    res.notes = (
        "raw: one pipeline: BEGIN, INSERT component RETURNING, INSERT event (same outbox"
        " row), COMMIT, on a held connection (the target) and through a pool; the library"
        " pipelines the same way from its pool; the outbox relay is paused during the case"
    )
    return res


def _tokens(count: int, gen: int) -> list[dict[str, Any]]:
    return [
        {
            "name": f"color.t{i:04d}",
            "category": "color",
            "value": f"#{(gen * 7919 + i) % 0xFFFFFF:06x}",
        }
        for i in range(count)
    ]


async def tokens_sync(env: Env, config: Config) -> Result:
    """``tokens.sync`` of 1,000 tokens vs a raw pipelined executemany and 1,000 upserts."""
    res = Result("tokens.sync (1,000)")
    count = 1000 if not config.quick else 50
    lib_pid, batch_pid, single_pid = [await env.new_project() for _ in range(3)]
    gen = [0]  # every call writes new values, so every token is really updated
    conn = await connect(env)

    def rows(pid: object) -> list[tuple[Any, ...]]:
        gen[0] += 1
        return [
            (uuid7(), pid, t["name"], t["category"], None, Jsonb(t["value"]))
            for t in _tokens(count, gen[0])
        ]

    try:

        async def library() -> object:
            gen[0] += 1
            return await env.wis.tokens.sync(lib_pid, _tokens(count, gen[0]))

        async def raw_batch() -> None:
            params = rows(batch_pid)
            async with conn.transaction(), conn.cursor() as cur:
                await cur.executemany(UPSERT_TOKEN, params)

        async def raw_single() -> None:
            for p in rows(single_pid):
                await conn.execute(UPSERT_TOKEN, p, prepare=True)

        batch_config = Config(rounds=max(2, config.rounds // 2), scale=config.scale)
        res.ops = await measure(
            {"library": library, "raw executemany (pipelined)": raw_batch},
            iterations=config.n(4),
            config=batch_config,
        )

        async def library_single() -> None:
            gen[0] += 1
            for t in _tokens(count, gen[0]):
                await env.wis.tokens.upsert(project_id=single_pid, **t)

        res.ops |= await measure(
            {"raw 1,000 separate upserts": raw_single},
            iterations=1,
            config=Config(rounds=max(2, config.rounds // 3), scale=config.scale),
        )
        res.ops |= await measure(
            {"library 1,000 tokens.upsert": library_single},
            iterations=1,
            config=Config(rounds=2, scale=config.scale),
        )
    finally:
        await conn.close()
    ratio = res.ratio("library / raw batch", "library", "raw executemany (pipelined)")
    speedup = 1 / res.ratio("library / separate", "library", "raw 1,000 separate upserts")
    res.values["speed-up vs raw separate upserts"] = speedup
    res.values["speed-up vs 1,000 tokens.upsert"] = 1 / res.ratio(
        "library / tokens.upsert x1000", "library", "library 1,000 tokens.upsert"
    )
    res.targets.append(Target("ratio vs raw batch", ratio, 1.2, "<=", ratio="library / raw batch"))
    res.targets.append(Target("speed-up vs 1,000 raw upserts", speedup, 10.0, ">="))
    res.notes = (
        f"{count} tokens, every value changed each call; raw batch: executemany (psycopg"
        " pipelines it) of a plain upsert in one transaction on a held connection; separate:"
        " one autocommit upsert per token on a held connection (loopback; judged), and"
        " 1,000 library tokens.upsert calls (each with its event; reported)"
    )
    return res


async def run(env: Env, config: Config) -> list[Result]:
    """The database cases."""
    return [
        await users_find_by_id(env, config),
        await components_create(env, config),
        await tokens_sync(env, config),
    ]
