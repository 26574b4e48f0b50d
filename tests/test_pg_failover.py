"""PostgreSQL failover: a primary with a synchronous streaming standby, the primary killed.

Writes run in a loop through ``wis`` (each records an event) while the primary's whole
process group is SIGKILLed and the standby promoted with ``pg_ctl promote``. The
``DATABASE_URL`` names both servers in libpq's multi-host form with
``target_session_attrs=read-write``, so the pool finds the new primary by itself.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from tests.clusters.postgres import PgCluster
from tests.test_events_outbox import read_all

from wis2l_core import Settings, Wis2l
from wis2l_core.errors import ServiceUnavailable, Wis2lError
from wis2l_core.testing.plugin import drop_stream
from wis2l_core.testing.servers import Servers

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.timing,
    pytest.mark.timeout(180),
]

log = logging.getLogger(__name__)

POOL = 8
WRITERS = 3
OUTAGE = 2.0


@pytest.fixture
def cluster() -> Iterator[PgCluster]:
    with PgCluster() as cluster:
        cluster.start_primary()
        cluster.add_standby()
        yield cluster


def _settings(cluster: PgCluster, servers: Servers, **extra: Any) -> Settings:
    assert cluster.standby is not None
    tag = uuid.uuid4().hex[:10]
    hosts = f"127.0.0.1:{cluster.primary.port},127.0.0.1:{cluster.standby.port}"
    return Settings(
        database_url=f"postgresql://postgres@{hosts}/wis2l?target_session_attrs=read-write",
        redis_url=servers.redis_url,
        nats_urls=(servers.nats_url,),
        namespace=f"t{tag}",
        stream_name=f"T{tag.upper()}",
        db_pool_min_size=POOL,
        db_pool_max_size=POOL,
        db_pool_timeout=10.0,
        db_connect_timeout=2.0,
        **extra,
    )


async def test_failover_to_a_promoted_standby_loses_no_acknowledged_write(
    cluster: PgCluster, wis2l_servers: Servers
) -> None:
    assert cluster.standby is not None
    settings = _settings(cluster, wis2l_servers)
    assert await Wis2l(settings).migrate()
    loop = asyncio.get_running_loop()
    acked: list[uuid.UUID] = []
    done_at: list[tuple[float, float]] = []  # (started, finished) of each acknowledged write
    failures: list[tuple[float, Wis2lError]] = []
    stop = asyncio.Event()

    async def writer(project_id: uuid.UUID, n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            started = loop.time()
            try:
                component = await wis.components.create(
                    project_id=project_id, name=f"w{n}-{i}", language="lua", code="x"
                )
            except Wis2lError as exc:
                failures.append((loop.time(), exc))
                await asyncio.sleep(0.005)
                continue
            acked.append(component.id)
            done_at.append((started, loop.time()))

    try:
        async with Wis2l(settings) as wis:
            user = await wis.users.create(email="f@example.com", name="F", subject="f")
            project = await wis.projects.create(
                owner_id=user.id, name="P", slug="p-failover", engine="godot"
            )
            tasks = [asyncio.create_task(writer(project.id, n)) for n in range(WRITERS)]
            await asyncio.sleep(1.0)
            before = len(acked)
            await asyncio.to_thread(cluster.kill, cluster.primary)
            killed_at = loop.time()  # the primary and its backends are gone
            # The outage: no primary at all, long enough for psycopg_pool's own back-off
            # (1 s, then 2 s, ...) to have pushed its next attempt well past the promotion.
            await asyncio.sleep(OUTAGE)
            promote_at = loop.time()
            await asyncio.to_thread(cluster.promote, cluster.standby)
            promoted_at = loop.time()
            for _ in range(400):
                if any(t > promoted_at for _, t in done_at):
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(1.0)
            stop.set()
            await asyncio.gather(*tasks)
            # A call started after the kill cannot have been served by the old primary.
            first_good = min(t for s, t in done_at if s > killed_at) - promote_at

            # Every committed event reaches the stream once (the relay recovers by itself).
            async def backlog() -> int:
                row = await wis.database.fetch_one(
                    "SELECT count(*) AS n FROM events"
                    " WHERE subject IS NOT NULL AND published_at IS NULL"
                )
                assert row is not None
                return int(row["n"])

            for _ in range(300):
                if await backlog() == 0:
                    break
                await asyncio.sleep(0.1)
            assert await backlog() == 0
            msgs = await read_all(wis.bus, f"{wis.bus.namespace}.component.created")
    finally:
        await drop_stream(settings)

    published = collections.Counter((m.headers or {})["Nats-Msg-Id"] for m in msgs)
    with psycopg.connect(cluster.standby.url("wis2l"), autocommit=True) as conn:
        stored = {r[0] for r in conn.execute("SELECT id FROM components").fetchall()}
        committed = {
            str(r[0])
            for r in conn.execute(
                "SELECT id FROM events WHERE type = 'component.created'"
            ).fetchall()
        }
    lost = [c for c in acked if c not in stored]
    log.warning(
        "failover: %d writes acknowledged (%d before the kill), %d failed calls, %d committed"
        " events, first good write %.3f s after `pg_ctl promote` began (it took %.3f s)",
        len(acked),
        before,
        len(failures),
        len(committed),
        first_good,
        promoted_at - promote_at,
    )
    print(
        f"FIGURES acked={len(acked)} before_kill={before} failed={len(failures)}"
        f" committed_events={len(committed)} first_good_after_promote_began={first_good:.3f}s"
        f" promote={promoted_at - promote_at:.3f}s"
    )
    assert not lost, f"{len(lost)} acknowledged writes lost"
    assert len(acked) > before > 0
    # At most one failed call per pooled connection; in fact only the calls in flight at
    # the kill fail: the first failure discards the idle connections (the pool is larger
    # than the number of writers) before anyone is handed one.
    assert len(failures) <= WRITERS, [str(e) for _, e in failures]
    assert all(isinstance(e, ServiceUnavailable) for _, e in failures)
    # Within 1 s of the promotion (measured from when it began: pg_ctl's -w polls, so
    # the server takes writes a little before pg_ctl returns).
    assert first_good < 1.0
    # Every committed write's event is on the stream exactly once.
    assert set(published) == committed
    assert set(published.values()) == {1}
