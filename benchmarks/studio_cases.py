"""The studio's table page over 1,000,000 rows: under 200 ms server-side (issue 14).

A table of 1M rows (``generate_series``, a jsonb column, an index on a low-cardinality
column) is made in the run's database; the studio's ASGI app is called in-process (httpx's
ASGI transport: routing, the catalog, the keyset query, the row count or estimate, the
Jinja rendering of 50 rows; no network). Four pages: the first, sorted on the indexed
column descending, filtered on it, and a page 10,000 rows in (its cursor), which costs what
the first costs because there is no ``OFFSET``. The quick run uses 100,000 rows.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from html import unescape
from urllib.parse import parse_qsl, urlsplit

import httpx

from benchmarks.env import Env
from benchmarks.harness import Config, Result, Target, measure
from wis2l_core.studio import create_app

__all__ = ["run"]

LIMIT_MS = 200.0


async def table_page(env: Env, config: Config) -> Result:
    """One table page of the studio over 1M rows (median and p99 per page kind)."""
    rows = 100_000 if config.quick else 1_000_000
    res = Result(f"studio table page ({rows:,} rows)")
    db = env.wis.database
    await db.execute("DROP TABLE IF EXISTS bench_studio")
    await db.execute(
        "CREATE TABLE bench_studio (id bigint PRIMARY KEY, name text NOT NULL, "
        "kind text NOT NULL, data jsonb NOT NULL)"
    )
    try:
        await db.execute(
            "INSERT INTO bench_studio SELECT g, 'row ' || g, 'k' || (g %% 10), "
            "jsonb_build_object('g', g, 'tags', jsonb_build_array('a', 'b')) "
            "FROM generate_series(1, %s) g",
            [rows],
        )
        await db.execute("CREATE INDEX bench_studio_kind_idx ON bench_studio (kind, id)")
        await db.execute("ANALYZE bench_studio")
        app = create_app(env.wis)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:5555"
        ) as client:
            deep = await client.get("/t/bench_studio?limit=500")
            for _ in range(19):
                m = urlsplit(_next(deep.text))
                deep = await client.get(f"{m.path}?{m.query}")
            after = dict(parse_qsl(urlsplit(_next(deep.text)).query))["after"]
            pages = {
                "first page": "/t/bench_studio",
                "sorted desc": "/t/bench_studio?sort=kind&desc=1",
                "filtered": "/t/bench_studio?fc=kind&fo=eq&fv=k7",
                "10,000 rows in": f"/t/bench_studio?after={after}",
            }

            def op(url: str) -> Callable[[], Awaitable[None]]:
                async def call() -> None:
                    r = await client.get(url)
                    if r.status_code != 200:
                        raise RuntimeError(f"{url}: {r.status_code}")

                return call

            res.ops = await measure(
                {name: op(url) for name, url in pages.items()},
                iterations=config.n(20),
                config=config,
            )
    finally:
        await db.execute("DROP TABLE IF EXISTS bench_studio")
    for name, stats in res.ops.items():
        res.targets.append(Target(f"{name}: p99", stats.p99_ms, LIMIT_MS, "<=", "ms"))
    res.notes = (
        "50 rows per page, rendered; in-process ASGI call (no network); keyset cursor, no "
        "OFFSET, exact count capped at 10,001 rows then pg_class.reltuples"
    )
    return res


def _next(html: str) -> str:
    m = re.search(r'id="next" rel="next" href="([^"]+)"', html)
    if m is None:
        raise RuntimeError("no next page")
    return unescape(m.group(1))


async def run(env: Env, config: Config) -> list[Result]:
    """The studio's cases."""
    return [await table_page(env, config)]
