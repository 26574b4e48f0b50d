"""The audit log at scale: reads, relay drain, disk and the 0004 migration by table size.

Run by hand (minutes at 5M rows; not part of ``nox -s bench``)::

    python -m benchmarks.scale_events                       # 0.1M, 1M and 5M rows
    python -m benchmarks.scale_events --rows 100000 --no-migration
    python -m benchmarks.scale_events --compare 1000000     # one table vs partitions

For each size N, on the servers of ``WIS2L_TEST_*`` (else an embedded stack):

- **steady state**: a fresh migrated database whose ``events`` holds N published events
  spread over the last 120 days, in month partitions (as ``wis2l db prune`` keeps them),
  across 1,000 projects; then ``VACUUM ANALYZE``. Measured: ``events.find_by_project_id``
  (first page of 50) p50/p99 over 500 calls through the repository, ``find_by_id`` p50,
  the relay draining a backlog of 20,000 new events (``relay_once`` passes, as the outbox
  bench does) and the table's size on disk (heap, TOAST and indexes) per million rows.
- **migration** (``--no-migration`` skips it): the same N rows in the table as 0001-0003
  left it, then the wall time of ``apply_migrations`` running 0004 (seconds per million
  rows). The ``find_by_project_id`` query's p50 (raw, prepared, one held connection) is
  taken on the one table before and on the partitioned one after, and in the steady
  state too: a like-for-like comparison on a shared machine.

Rows are written by ``INSERT ... SELECT generate_series`` with time-ordered ids (like the
uuid7 the library writes), in chunks of 500,000.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import secrets
import statistics
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import psycopg
from psycopg import sql

from benchmarks.env import run_env, servers_and_database
from wis2l_core.db.migrate import apply_migrations
from wis2l_core.db.repository import event_params
from wis2l_core.db.sql import migrations, query_file
from wis2l_core.events import BuildProgress
from wis2l_core.events.outbox import OutboxRelay
from wis2l_core.testing.servers import find_servers, with_database

CHUNK = 500_000
PROJECTS = 1000
DAYS = 120
BACKLOG = 20_000

# Shaped like the library's rows: a subject, the event's JSON as payload, published.
LOAD = """
INSERT INTO events (id, type, subsystem, project_id, subject, payload, published_at,
                    created_at, updated_at)
SELECT x.id, 'build.progress', 'ignis', x.p, 'wis2l.build.progress',
       jsonb_build_object('id', x.id, 'occurred_at', x.ts, 'project_id', x.p,
                          'build_id', x.b, 'progress', mod(x.g, 101)),
       x.ts, x.ts, x.ts
FROM (SELECT g, ts, gen_random_uuid() AS b,
             (%(projects)s::uuid[])[1 + mod(g, %(n_projects)s::int)] AS p,
             encode(overlay(uuid_send(gen_random_uuid()) PLACING
                            substring(int8send((extract(epoch FROM ts) * 1000)::bigint) FROM 3)
                            FROM 1 FOR 6), 'hex')::uuid AS id
      FROM (SELECT g, now() - make_interval(days => %(days)s::int)
                       * (1 - (g - 0.5)::float8 / %(total)s::bigint) AS ts
            FROM generate_series(%(first)s::bigint, %(last)s::bigint) g) t) x
"""

USER_ROW = """
INSERT INTO users (id, email, name, subject)
VALUES ('00000000-0000-4000-8000-00000000beef', 'scale@bench.io', 'Scale', 'scale-bench')
ON CONFLICT DO NOTHING
"""
PROJECT_ROWS = """
INSERT INTO projects (owner_id, name, slug, engine)
SELECT '00000000-0000-4000-8000-00000000beef', 'scale ' || g, 'scale-' || g, 'web'
FROM generate_series(1, %(n)s::int) g
"""


def _month_partitions(conn: psycopg.Connection[Any], days: int) -> None:
    """Month partitions back to ``days`` ago (the library creates this month onward)."""
    now = datetime.datetime.now(datetime.UTC)
    first = now - datetime.timedelta(days=days)
    month = first.year * 12 + first.month - 1
    while month < now.year * 12 + now.month - 1:
        lower = datetime.datetime(month // 12, month % 12 + 1, 1, tzinfo=datetime.UTC)
        upper = datetime.datetime((month + 1) // 12, (month + 1) % 12 + 1, 1, tzinfo=datetime.UTC)
        conn.execute(
            sql.SQL("CREATE TABLE {} PARTITION OF events FOR VALUES FROM ({}) TO ({})").format(
                sql.Identifier(f"events_p{lower:%Y%m}"), sql.Literal(lower), sql.Literal(upper)
            )
        )
        month += 1


def _load(url: str, rows: int) -> float:
    """N published events over the last DAYS days; returns the seconds taken."""
    start = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(USER_ROW)
        conn.execute(PROJECT_ROWS, {"n": PROJECTS})
        projects = [r[0] for r in conn.execute("SELECT id FROM projects ORDER BY id")]
        for first in range(1, rows + 1, CHUNK):
            last = min(rows, first + CHUNK - 1)
            conn.execute(
                LOAD,
                {
                    "projects": projects,
                    "n_projects": len(projects),
                    "days": DAYS,
                    "total": rows,
                    "first": first,
                    "last": last,
                },
            )
            print(f"  loaded {last:,} rows ({time.perf_counter() - start:.0f} s)", flush=True)
        conn.execute("VACUUM ANALYZE events")
    return time.perf_counter() - start


def _page_p50(url: str) -> float:
    """p50 ms of the ``find_by_project_id`` query (first page of 50, prepared), 300 calls
    over random projects, on one held connection: the same measure on any schema."""
    text = query_file("events")["find_by_project_id"].text
    with psycopg.connect(url) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM projects ORDER BY random()")]
        calls: list[float] = []
        for i in range(300):
            start = time.perf_counter()
            conn.execute(
                text,
                {"project_id": ids[i % len(ids)], "after": ZERO, "limit": 50},
                prepare=True,
            ).fetchall()
            calls.append(time.perf_counter() - start)
    return _ms(calls, 50)


ZERO = "00000000-0000-0000-0000-000000000000"


def _size(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT sum(pg_total_relation_size(relid))::bigint FROM wis2l_events_partitions()"
        ).fetchone()
        assert row is not None
        return int(row[0])


def _ms(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1000 if len(values) > 1 else 0.0


def _steady(rows: int) -> dict[str, float]:
    out: dict[str, float] = {}
    with servers_and_database() as (servers, url):
        with psycopg.connect(url, autocommit=True) as conn:
            _month_partitions(conn, DAYS)
        out["load s"] = _load(url, rows)
        out["MB per 1M events"] = _size(url) / 1e6 / (rows / 1e6)
        out["page query p50 ms (raw, held conn)"] = _page_p50(url)
        out |= asyncio.run(_reads_and_drain(servers, url, rows))
    return out


async def _reads_and_drain(servers: Any, url: str, rows: int) -> dict[str, float]:
    out: dict[str, float] = {}
    async with run_env(servers, url) as env:
        with psycopg.connect(url) as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM projects ORDER BY random()")]
            events = [
                r[0] for r in conn.execute("SELECT id FROM events TABLESAMPLE SYSTEM (1) LIMIT 500")
            ]
        calls: list[float] = []
        for i in range(500):
            start = time.perf_counter()
            await env.wis.events.find_by_project_id(ids[i % len(ids)], limit=50)
            calls.append(time.perf_counter() - start)
        out["find_by_project_id p50 ms"] = _ms(calls, 50)
        out["find_by_project_id p99 ms"] = _ms(calls, 99)
        lookups: list[float] = []
        for event_id in events:
            start = time.perf_counter()
            assert await env.wis.events.find_by_id(event_id) is not None
            lookups.append(time.perf_counter() - start)
        out["find_by_id p50 ms"] = _ms(lookups, 50)
        out["relay drain events/s"] = await _drain(env)
    return out


async def _drain(env: Any) -> float:
    await env.wis.relay.stop(5)
    text = query_file("events")["insert_outbox"].text
    pid = env.project_id
    params = [
        event_params(BuildProgress(project_id=pid, build_id=pid, progress=i % 101))
        for i in range(BACKLOG)
    ]
    async with env.wis.database.connection() as conn, conn.transaction(), conn.cursor() as cur:
        await cur.executemany(text, params)
    relay = OutboxRelay(env.settings, env.wis.database, env.wis.bus)
    start = time.perf_counter()
    done = 0
    while done < BACKLOG:
        done += await relay.relay_once()
    return BACKLOG / (time.perf_counter() - start)


def _migration(rows: int) -> dict[str, float]:
    name = f"wis2l_scale_{secrets.token_hex(4)}"
    with find_servers() as servers, TemporaryDirectory() as tmp:
        old = Path(tmp)
        for migration in migrations():
            if migration.name < "0004":
                (old / f"{migration.name}.sql").write_text(migration.text, encoding="utf-8")
        admin = with_database(servers.database_url, "postgres")
        url = with_database(servers.database_url, name)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            asyncio.run(apply_migrations(url, directory=old))
            load = _load(url, rows)
            before = _page_p50(url)
            start = time.perf_counter()
            applied = asyncio.run(apply_migrations(url))
            took = time.perf_counter() - start
            assert applied[0] == "0004_events_partitioned", applied
            with psycopg.connect(url) as conn:
                row = conn.execute("SELECT count(*) FROM events").fetchone()
                assert row is not None
                assert row[0] == rows
            after = _page_p50(url)
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
    return {
        "load s": load,
        "0004 s": took,
        "0004 s per 1M rows": took / (rows / 1e6),
        "page query p50 ms before 0004 (one table)": before,
        "page query p50 ms after 0004 (events_history)": after,
    }


def _compare(rows: int, rounds: int = 5) -> dict[str, list[float]]:
    """The page query's p50 on the one table (0001-0003) and in month partitions (0004),
    same rows, measured alternately ``rounds`` times: the like-for-like comparison."""
    found: dict[str, list[float]] = {"one table": [], "month partitions": []}
    with find_servers() as servers, TemporaryDirectory() as tmp:
        old = Path(tmp)
        for migration in migrations():
            if migration.name < "0004":
                (old / f"{migration.name}.sql").write_text(migration.text, encoding="utf-8")
        admin = with_database(servers.database_url, "postgres")
        names = {kind: f"wis2l_scale_{secrets.token_hex(4)}" for kind in found}
        urls = {kind: with_database(servers.database_url, name) for kind, name in names.items()}
        try:
            for kind, name in names.items():
                with psycopg.connect(admin, autocommit=True) as conn:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                if kind == "one table":
                    asyncio.run(apply_migrations(urls[kind], directory=old))
                else:
                    asyncio.run(apply_migrations(urls[kind]))
                    with psycopg.connect(urls[kind], autocommit=True) as conn:
                        _month_partitions(conn, DAYS)
                _load(urls[kind], rows)
            for _ in range(rounds):
                for kind, values in found.items():
                    values.append(_page_p50(urls[kind]))
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                for name in names.values():
                    conn.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(name)
                        )
                    )
    return found


def main() -> None:
    """Run the sizes given and print one line of figures per size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="100000,1000000,5000000")
    parser.add_argument("--no-migration", action="store_true")
    parser.add_argument(
        "--compare",
        type=int,
        metavar="ROWS",
        help="only compare the page query on the one table and in month partitions",
    )
    args = parser.parse_args()
    if args.compare:
        print(f"{args.compare:,} events: page query p50 ms, alternating", flush=True)
        print(f"  {_compare(args.compare)}", flush=True)
        return
    for rows in (int(r) for r in args.rows.split(",")):
        print(f"{rows:,} events: steady state", flush=True)
        print(f"  {_steady(rows)}", flush=True)
        if not args.no_migration:
            print(f"{rows:,} events: migration 0004", flush=True)
            print(f"  {_migration(rows)}", flush=True)


if __name__ == "__main__":
    main()
