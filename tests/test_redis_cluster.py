"""The caches on a Valkey Cluster of 3 masters + 3 replicas, and through a master's crash.

The single-server tests of every cache service run here again, unchanged: this module
overrides the ``settings`` fixture, so the suite's ``client`` fixture connects with a
``redis+cluster://`` URL. Then the cluster-only checks: a plain URL on a cluster node is
refused, keys spread over the masters, and a master SIGKILLed mid-test: calls fail open
(or raise ``ServiceUnavailable`` for sessions), recover by themselves once its replica
takes over, and sessions written before the crash are still valid after it.
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
from tests.clusters.valkey import ValkeyCluster, ValkeyNode, wait_for

# The single-server tests, collected again here on the cluster (see the docstring).
from tests.test_cache_input import (
    test_session_user_id_given_as_text_reads_back_as_uuid,  # noqa: F401
    test_token_cache_refuses_a_generation_key_as_project_id,  # noqa: F401
    test_token_cache_spellings_of_one_uuid_share_one_entry,  # noqa: F401
)
from tests.test_cache_ratelimit import (
    test_30_concurrent_hits_with_limit_10_allow_exactly_10,  # noqa: F401
    test_cost,  # noqa: F401
    test_exact_across_processes,  # noqa: F401
    test_first_hit_and_key_ttl,  # noqa: F401
    test_hits_come_back_over_time,  # noqa: F401
    test_keys_are_independent,  # noqa: F401
)
from tests.test_cache_sessions import (
    test_create_and_get,  # noqa: F401
    test_expired_sessions_leave_the_user_set,  # noqa: F401
    test_no_raw_token_in_any_key_or_value,  # noqa: F401
    test_refresh_slides_the_expiry,  # noqa: F401
    test_revoke,  # noqa: F401
    test_revoke_all,  # noqa: F401
    test_revoke_all_while_the_user_signs_in_elsewhere,  # noqa: F401
    test_session_expires,  # noqa: F401
    test_tokens_are_unique_and_unguessable,  # noqa: F401
)
from tests.test_cache_sessions import (
    test_ttl_is_read_back_from_redis as test_session_ttl_is_read_back_from_redis,  # noqa: F401
)
from tests.test_cache_store import (
    test_build_cache,  # noqa: F401
    test_get_set_delete_exists,  # noqa: F401
    test_keys_are_namespaced_by_service,  # noqa: F401
    test_ttl_is_read_back_from_redis,  # noqa: F401
    test_typed_get_builds_models_back,  # noqa: F401
    test_unreadable_value_is_a_logged_miss,  # noqa: F401
)
from tests.test_cache_tokens import (
    test_50_concurrent_misses_load_once,  # noqa: F401
    test_a_dead_lock_holder_is_taken_over,  # noqa: F401
    test_a_load_racing_an_invalidation_does_not_store_stale_data,  # noqa: F401
    test_invalidate,  # noqa: F401
    test_loader_error_reaches_every_caller_and_is_not_cached,  # noqa: F401
    test_two_processes_load_once,  # noqa: F401
)

from wis2l_core import ConfigError, ServiceUnavailable, Settings, Wis2l
from wis2l_core.cache import Cache, RateLimiter, RedisClient, SessionStore, TokenCache
from wis2l_core.health import HealthChecker, HealthStatus

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture(scope="module")
def valkey_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyCluster]:
    """3 masters + 3 replicas, cluster-node-timeout 1 s, for the whole module."""
    base: Path = tmp_path_factory.mktemp("valkey-cluster")
    with ValkeyCluster(base, masters=3, node_timeout_ms=1000) as cluster:
        yield cluster


@pytest.fixture(autouse=True)
def _whole_cluster(valkey_cluster: ValkeyCluster) -> None:
    """Every test starts on a cluster with all six nodes up (a crash test restarts its
    victim, which rejoins as a replica)."""
    for node in valkey_cluster.nodes:
        if not node.running:
            valkey_cluster.start(node)
    valkey_cluster.wait_ok()
    wait_for(valkey_cluster.replicas_synced, 20, "replicas in sync")


@pytest.fixture
def settings(valkey_cluster: ValkeyCluster) -> Settings:
    """The suite's ``settings`` on the cluster: the shared tests' ``client`` uses it."""
    return Settings(redis_url=valkey_cluster.url, namespace=f"t{uuid4().hex[:12]}")


async def test_a_plain_url_on_a_cluster_node_is_refused(valkey_cluster: ValkeyCluster) -> None:
    node = valkey_cluster.nodes[0]
    client = RedisClient(Settings(redis_url=f"redis://{node.address}/0", namespace="tplain"))
    await client.open()
    try:
        with pytest.raises(ConfigError) as info:
            await client.ping()
        assert "redis+cluster://" in str(info.value)
        assert info.value.variable == "REDIS_URL"
        with pytest.raises(ConfigError):  # not a silent miss: no call half-works
            await Cache(client, "x").set("k", 1)
    finally:
        await client.aclose()


async def test_keys_spread_over_every_master_and_all_writes_land(
    client: RedisClient, valkey_cluster: ValkeyCluster
) -> None:
    cache = Cache(client, "spread")
    assert all([await cache.set(f"k{i}", i) for i in range(30)])  # one server: 17 of 30
    assert [await cache.get(f"k{i}") for i in range(30)] == list(range(30))
    masters = {valkey_cluster.master_of(cache.key(f"k{i}")).name for i in range(30)}
    assert len(masters) == 3
    sessions = SessionStore(client)
    users = [uuid4() for _ in range(30)]
    made = [await sessions.create(user) for user in users]
    masters = {valkey_cluster.master_of(_session_key(client, s.token)).name for s in made}
    assert len(masters) == 3  # users spread over the slots too


async def test_ping_reports_the_cluster(client: RedisClient) -> None:
    assert await client.ping() == {"mode": "cluster", "role": "master", "masters": 3}


async def test_the_runtime_starts_on_the_cluster_and_refuses_a_plain_node_url(
    wis2l_settings: Settings, valkey_cluster: ValkeyCluster
) -> None:
    settings = attrs.evolve(wis2l_settings, redis_url=valkey_cluster.url)
    async with Wis2l(settings) as wis:
        report = await wis.health()
        assert report.checks["redis"].healthy
        assert report.checks["redis"].details == {"mode": "cluster", "role": "master", "masters": 3}
        session = await wis.sessions.create(uuid4(), {"k": 1})
        assert await wis.sessions.get(session.token) == session
    plain = attrs.evolve(
        wis2l_settings,
        redis_url=f"redis://{valkey_cluster.nodes[0].address}/0",
        environment="production",
    )
    with pytest.raises(ConfigError, match=r"redis\+cluster://"):
        await Wis2l(plain).start()


def _session_key(client: RedisClient, token: str) -> str:
    return client.key("session", f"{{{token[:16]}}}")


def _synced(master: ValkeyNode, replica: ValkeyNode) -> bool:
    with master.admin() as m, replica.admin() as r:
        offset = int(m.info("replication")["master_repl_offset"])
        return int(r.info("replication")["slave_repl_offset"]) >= offset


async def test_a_master_killed_mid_test_fails_open_then_recovers_by_itself(
    client: RedisClient, valkey_cluster: ValkeyCluster
) -> None:
    sessions = SessionStore(client)
    cache = Cache(client, "crash")
    limiter = RateLimiter(client)
    tokens = TokenCache(client)
    made = [await sessions.create(uuid4(), {"n": i}) for i in range(40)]
    victim = valkey_cluster.master_of(_session_key(client, made[0].token))
    replica = valkey_cluster.replica_of(victim)
    on_victim = [
        s for s in made if valkey_cluster.master_of(_session_key(client, s.token)) is victim
    ]
    key = next(
        f"k{i}" for i in range(1000) if valkey_cluster.master_of(cache.key(f"k{i}")) is victim
    )
    assert await cache.set(key, "before")
    # The replica has everything written so far (what WAIT 1 would have waited for).
    wait_for(lambda: _synced(victim, replica), 10, "replica caught up")

    outcomes: dict[str, list[Any]] = {"cache": [], "session": [], "limit": [], "tokens": []}
    stop = asyncio.Event()
    slowest: list[float] = []  # how long each cache write took

    async def load() -> str:
        return "loaded"

    async def traffic() -> None:
        while not stop.is_set():
            began = time.monotonic()
            outcomes["cache"].append((time.monotonic(), await cache.set(key, "during")))
            slowest.append(time.monotonic() - began)
            try:
                outcomes["session"].append(
                    (time.monotonic(), await sessions.get(on_victim[0].token))
                )
            except ServiceUnavailable as exc:
                outcomes["session"].append((time.monotonic(), exc))
            outcomes["limit"].append(await limiter.hit(f"crash{uuid4()}", limit=5, per=60))
            outcomes["tokens"].append(await tokens.get_or_load(uuid4(), load))
            await asyncio.sleep(0.02)

    idle = RedisClient(client.settings)  # a client that only runs health checks
    await idle.open()
    checker = HealthChecker.for_services(client.settings, redis=idle)
    health: list[tuple[float, HealthStatus]] = []

    async def probe() -> None:
        while not stop.is_set():
            health.append((time.monotonic(), (await checker.run()).status))
            await asyncio.sleep(0.1)

    runners = [asyncio.create_task(traffic()) for _ in range(4)]  # concurrent callers
    runners.append(asyncio.create_task(probe()))
    await asyncio.sleep(0.3)
    killed = time.monotonic()
    valkey_cluster.kill(victim)
    await asyncio.to_thread(wait_for, lambda: valkey_cluster.is_master(replica), 20, "promotion")
    promoted = time.monotonic()

    async def writes_again() -> bool:
        return (
            bool(outcomes["cache"])
            and outcomes["cache"][-1][1] is True
            and outcomes["cache"][-1][0] > killed
        )

    deadline = time.monotonic() + 20
    while not await writes_again():
        assert time.monotonic() < deadline, "writes did not resume within 20 s"
        await asyncio.sleep(0.02)
    resumed = time.monotonic()
    await asyncio.sleep(0.3)
    await asyncio.to_thread(
        wait_for, lambda: bool(health) and health[-1][1] is HealthStatus.OK, 20, "health ok"
    )
    stop.set()
    await asyncio.gather(*runners)
    await idle.aclose()
    assert any(status is not HealthStatus.OK for t, status in health if t > killed)
    healthy_again = min(
        t
        for t, status in health
        if status is HealthStatus.OK and t > max(t for t, st in health if st is not HealthStatus.OK)
    )

    # During the failover: misses and skipped writes (fail open), sessions either right
    # or ServiceUnavailable; never an exception from a cache, never a wrong "no session".
    assert all(r in (True, False) for _, r in outcomes["cache"])
    assert any(r is False for t, r in outcomes["cache"] if t > killed)  # it did fail over
    for _, got in outcomes["session"]:
        assert isinstance(got, ServiceUnavailable) or got == on_victim[0]
    assert all(hit.allowed for hit in outcomes["limit"])  # fail_mode="open"
    assert set(outcomes["tokens"]) == {"loaded"}
    first_session_ok = min(
        (t for t, got in outcomes["session"] if t > killed and not isinstance(got, Exception)),
        default=None,
    )
    print(
        f"\nMEASURE cluster: slowest write {max(slowest):.2f} s, "
        f"promotion {promoted - killed:.2f} s after SIGKILL, "
        f"first write {resumed - killed:.2f} s, first session read "
        f"{'-' if first_session_ok is None else f'{first_session_ok - killed:.2f}'} s, "
        f"health ok again (idle client) {healthy_again - killed:.2f} s"
    )

    # Recovered by itself: the sessions written before the crash are all still valid,
    # and every service works on the promoted replica's slots.
    for session in on_victim:
        assert await sessions.get(session.token) == session
    assert await cache.get(key) == "during"
    again = await sessions.create(on_victim[0].user_id)
    assert await sessions.revoke_all(on_victim[0].user_id) == 2
    assert await sessions.get(again.token) is None
    hits = [await limiter.hit("after", limit=3, per=60) for _ in range(5)]
    assert [h.allowed for h in hits] == [True, True, True, False, False]
    assert client.available
