"""The caches through Sentinel (1 master, 1 replica, 3 Sentinels), and through a failover.

The single-server tests of the cache services run here again on a ``redis+sentinel://``
client (this module overrides the ``settings`` fixture). Then the master is SIGKILLed:
writes resume on the promoted replica without a new client, sessions written before the
crash are still valid, and the health check never says ``ok`` for a client pointed at a
server that is a read-only replica (the old master, back after the failover).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import attrs
import pytest
from tests.clusters.valkey import ValkeyNode, ValkeySentinel, wait_for

# The single-server tests, collected again here through Sentinel (see the docstring).
from tests.test_cache_ratelimit import (
    test_30_concurrent_hits_with_limit_10_allow_exactly_10,  # noqa: F401
    test_exact_across_processes,  # noqa: F401
)
from tests.test_cache_sessions import (
    test_create_and_get,  # noqa: F401
    test_refresh_slides_the_expiry,  # noqa: F401
    test_revoke,  # noqa: F401
    test_revoke_all,  # noqa: F401
)
from tests.test_cache_store import (
    test_build_cache,  # noqa: F401
    test_get_set_delete_exists,  # noqa: F401
)
from tests.test_cache_tokens import (
    test_50_concurrent_misses_load_once,  # noqa: F401
    test_invalidate,  # noqa: F401
)

from wis2l_core import ServiceUnavailable, Settings, StartupError, Wis2l
from wis2l_core.cache import Cache, RedisClient, SessionStore
from wis2l_core.health import HealthChecker, HealthStatus

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture(scope="module")
def valkey_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeySentinel]:
    """Master, replica and 3 Sentinels (down-after-milliseconds 1000) for the module."""
    base: Path = tmp_path_factory.mktemp("valkey-sentinel")
    with ValkeySentinel(base, down_after_ms=1000, failover_timeout_ms=5000) as setup:
        yield setup


@pytest.fixture
def settings(valkey_sentinel: ValkeySentinel) -> Settings:
    """The suite's ``settings`` through Sentinel: the shared tests' ``client`` uses it."""
    return Settings(redis_url=valkey_sentinel.url, namespace=f"t{uuid4().hex[:12]}")


def _synced(master: ValkeyNode, replica: ValkeyNode) -> bool:
    with master.admin() as m, replica.admin() as r:
        offset = int(m.info("replication")["master_repl_offset"])
        return int(r.info("replication")["slave_repl_offset"]) >= offset


def _checker(settings: Settings, client: RedisClient) -> HealthChecker:
    return HealthChecker.for_services(settings, redis=client)


async def test_ping_reports_sentinel_and_master(client: RedisClient) -> None:
    assert await client.ping() == {"mode": "sentinel", "role": "master"}


async def test_master_killed_writes_resume_on_the_promoted_replica(
    client: RedisClient, settings: Settings, valkey_sentinel: ValkeySentinel
) -> None:
    old = valkey_sentinel.current_master()
    new = next(n for n in valkey_sentinel.data_nodes if n is not old)
    sessions = SessionStore(client)
    cache = Cache(client, "failover")
    made = [await sessions.create(uuid4(), {"n": i}) for i in range(20)]
    assert await cache.set("k", "before")
    wait_for(lambda: _synced(old, new), 10, "replica caught up")
    # An app pointed at the master directly (no Sentinel), as before this release.
    direct_settings = Settings(redis_url=f"redis://{old.address}/0", namespace=settings.namespace)
    direct = RedisClient(direct_settings)
    await direct.open()
    checker = _checker(settings, client)
    writes: list[tuple[float, bool]] = []
    health: list[tuple[float, HealthStatus, str | None]] = []
    stop = asyncio.Event()
    slowest: list[float] = []  # how long each cache write took

    async def traffic() -> None:
        while not stop.is_set():
            began = time.monotonic()
            writes.append((time.monotonic(), await cache.set("k", "during")))
            slowest.append(time.monotonic() - began)
            await asyncio.sleep(0.02)

    async def probe() -> None:
        while not stop.is_set():
            report = await checker.run()
            health.append((time.monotonic(), report.status, report.checks["redis"].error))
            await asyncio.sleep(0.1)

    try:
        tasks = [asyncio.create_task(traffic()), asyncio.create_task(probe())]
        await asyncio.sleep(0.3)
        killed = time.monotonic()
        valkey_sentinel.kill(old)
        await asyncio.to_thread(
            wait_for, lambda: valkey_sentinel.current_master() is new, 30, "promotion"
        )
        promoted = time.monotonic()
        deadline = time.monotonic() + 20
        while not (writes and writes[-1][1] and writes[-1][0] > promoted):
            assert time.monotonic() < deadline, "writes did not resume within 20 s"
            await asyncio.sleep(0.02)
        resumed = min(t for t, ok in writes if ok and t > promoted)
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*tasks)

        # Fail open while there was no master; writes resumed without a new client.
        assert any(not ok for t, ok in writes if t > killed)
        healthy_again = min(
            t for t, status, _ in health if status is HealthStatus.OK and t > killed
        )
        assert await client.ping() == {"mode": "sentinel", "role": "master"}
        for session in made:  # the replica had them all
            assert await sessions.get(session.token) == session
        assert await cache.get("k") == "during"
        assert new.command("ROLE")[0] == b"master"

        # The old master comes back; the Sentinels turn it into a replica of the new one.
        # They notice on their INFO round (every 10 s for an instance not in a failover),
        # then wait for its config to look stale: 30 s was once too short on a loaded CI.
        valkey_sentinel.start(old)
        await asyncio.to_thread(
            wait_for, lambda: old.command("ROLE")[0] == b"slave", 60, "old master demoted"
        )
        demoted = time.monotonic()
        wait_for(lambda: _synced(new, old), 10, "old master synced as a replica")
        report = await _checker(direct_settings, direct).run()
        assert report.status is not HealthStatus.OK
        error = report.checks["redis"].error or ""
        assert "read-only replica" in error, error
        assert old.address in error
        assert new.address in error  # its master
        with pytest.raises(ServiceUnavailable, match="read-only replica"):
            await direct.ping()
        assert await Cache(direct, "failover").set("k", "lost") is False  # fails open
        assert await Cache(direct, "failover").get("k") == "during"  # reads still work
        # The Sentinel client never followed it there.
        assert await cache.set("k", "after")
        assert (await checker.run()).status is HealthStatus.OK
        print(  # the figures the docs quote
            f"\nMEASURE sentinel: slowest write {max(slowest):.2f} s, "
            f"promotion {promoted - killed:.2f} s after SIGKILL, "
            f"first write {resumed - killed:.2f} s, health ok again "
            f"{healthy_again - killed:.2f} s; old master a replica "
            f"{demoted - killed:.2f} s (restarted after the failover)"
        )
    finally:
        stop.set()
        await direct.aclose()


async def test_a_client_pointed_at_the_replica_is_never_ok(
    valkey_sentinel: ValkeySentinel,
) -> None:
    replica = next(
        n
        for n in valkey_sentinel.data_nodes
        if n.running and n is not valkey_sentinel.current_master()
    )
    settings = Settings(redis_url=f"redis://{replica.address}/0", namespace="treplica")
    client = RedisClient(settings)
    await client.open()
    try:
        reports: list[Any] = [await _checker(settings, client).run() for _ in range(3)]
        assert all(r.status is not HealthStatus.OK for r in reports)
        assert "read-only replica" in (reports[0].checks["redis"].error or "")
    finally:
        await client.aclose()


async def test_the_runtime_on_sentinel_and_refusing_a_replica_at_start(
    wis2l_settings: Settings, valkey_sentinel: ValkeySentinel
) -> None:
    settings = attrs.evolve(wis2l_settings, redis_url=valkey_sentinel.url)
    async with Wis2l(settings) as wis:
        report = await wis.health()
        assert report.checks["redis"].details == {"mode": "sentinel", "role": "master"}
        assert await wis.cache.set("k", 1)
    replica = next(
        n
        for n in valkey_sentinel.data_nodes
        if n.running and n is not valkey_sentinel.current_master()
    )
    on_replica = attrs.evolve(
        wis2l_settings,
        redis_url=f"redis://{replica.address}/0",
        environment="production",
        critical_services=frozenset({"database", "redis"}),
    )
    with pytest.raises(StartupError) as info:
        await Wis2l(on_replica).start()
    assert "read-only replica" in info.value.failures["redis"]
