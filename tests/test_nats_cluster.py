"""A 3-node NATS cluster with a 3-replica stream: nothing is lost when a node dies.

Each case writes 500 components through the repositories (so through the outbox and its
relay) with the app connected to all three servers, kills one node with SIGKILL part-way
and restarts it later, and checks that a durable subscriber saw every event (by event id)
and that the stream holds each event once. The longest gap between two deliveries around
the kill (the stall) is printed, for docs/operations.md.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import attrs
import nats
import nats.js.errors
import pytest
from tests.clusters.nats import NatsCluster, NatsNode
from tests.helpers import eventually, make_project

from wis2l_core.config import Settings
from wis2l_core.errors import ServiceUnavailable
from wis2l_core.events import ComponentCreated, EventBus
from wis2l_core.runtime import Wis2l

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(90)]

WRITES = 500
KILL_AT = 150  # writes done when the node is killed
RESTART_AFTER = 4.0  # seconds the node stays down
PACE = 0.01  # seconds between writes (500 writes take 5-8 s on a busy machine)

Victim = Literal["leader", "follower", "own"]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path / "nats") as cluster:
        yield cluster


@pytest.fixture
async def settings(cluster: NatsCluster, wis2l_settings: Settings) -> Settings:
    await cluster.wait_jetstream()
    return attrs.evolve(wis2l_settings, nats_urls=tuple(cluster.urls), stream_replicas=3)


@attrs.define
class Outcome:
    victim: str
    was_leader: bool
    led_consumer: bool
    deliveries: int
    unique: int
    event_ids: int
    in_stream: int
    stall: float
    recovered: float


async def _connected_node(bus: EventBus, cluster: NatsCluster) -> NatsNode:
    nc = bus._nc
    assert nc is not None
    assert nc.connected_url is not None
    return cluster.node(f":{nc.connected_url.port}")


async def run_case(cluster: NatsCluster, settings: Settings, victim: Victim) -> Outcome:
    stream = settings.stream_name
    arrivals: list[tuple[uuid.UUID, float]] = []  # (component id, when)
    event_ids: list[uuid.UUID] = []
    written: set[uuid.UUID] = set()
    async with Wis2l(settings) as wis:

        @wis.bus.subscribe(ComponentCreated, durable="cluster", concurrency=16)
        async def seen(event: ComponentCreated) -> None:
            arrivals.append((event.component_id, time.monotonic()))
            event_ids.append(event.id)

        project = await make_project(wis)
        info = await cluster.stream_info(stream)
        assert info.config.num_replicas == 3
        leader = await cluster.stream_leader(stream)
        own = await _connected_node(wis.bus, cluster)
        if victim == "leader":  # and not the app's own server (that is the last case)
            if own is leader:
                await cluster.move_leader(stream, away_from=own)
                leader = await cluster.stream_leader(stream)
            node = leader
        elif victim == "follower":  # one the app is not connected to, if there is one
            followers = await cluster.stream_followers(stream)
            node = next((f for f in followers if f is not own), followers[0])
        else:  # the app's own server, and not the leader (that is the first case)
            if own is leader:
                await cluster.move_leader(stream, away_from=own)
                leader = await cluster.stream_leader(stream)
            node = own
        consumer_leader = await _consumer_leader(wis.bus, stream, "cluster-component-created")
        killed_at = restarted_at = 0.0
        restart: asyncio.Task[None] | None = None

        async def bring_back() -> None:
            nonlocal restarted_at
            await asyncio.sleep(RESTART_AFTER)
            await asyncio.to_thread(cluster.start, node)
            restarted_at = time.monotonic()

        for i in range(WRITES):
            if i == KILL_AT:
                cluster.kill(node)
                killed_at = time.monotonic()
                restart = asyncio.create_task(bring_back())
            component = await wis.components.create(
                project_id=project, name=f"c{i}", language="python", code="pass"
            )
            written.add(component.id)
            await asyncio.sleep(PACE)
        if restart is not None:
            await restart

        def complete() -> bool:
            return {e for e, _ in arrivals} >= written

        try:
            await eventually(complete, timeout=40)
        except AssertionError:
            missing = len(written - {e for e, _ in arrivals})
            raise AssertionError(f"{missing} of {WRITES} events never delivered") from None
        await asyncio.sleep(0.5)  # late duplicates, if any, would show up now

        async def rejoined() -> bool:  # the restarted node caught up with the stream
            cl = (await cluster.stream_info(stream)).cluster
            assert cl is not None
            return node.name == cl.leader or any(
                r.name == node.name and r.current for r in cl.replicas or []
            )

        await eventually(rejoined, timeout=30, interval=0.5)
        nc = await nats.connect(cluster.urls)
        try:
            state = (await nc.jetstream().stream_info(stream, subjects_filter=">")).state
            in_stream = (state.subjects or {}).get(wis.bus.subject(ComponentCreated), 0)
        finally:
            await nc.close()
    times = sorted(t for _, t in arrivals)
    around = [t for t in times if t >= killed_at - 0.5]
    gaps = [b - a for a, b in itertools.pairwise(around)]
    after = [t for t in times if t > killed_at]
    return Outcome(
        victim=f"{victim} ({node.name})",
        was_leader=node is leader,
        led_consumer=node.name == consumer_leader,
        deliveries=len(arrivals),
        unique=len({e for e, _ in arrivals} & written),
        event_ids=len(set(event_ids)),
        in_stream=in_stream,
        stall=max(gaps, default=0.0),
        recovered=(after[0] - killed_at) if after else float("inf"),
    )


@pytest.mark.parametrize("victim", ["leader", "follower", "own"])
async def test_no_event_is_lost_or_doubled_when_a_node_dies(
    cluster: NatsCluster, settings: Settings, victim: Victim, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wis2l_core.events")
    caplog.set_level(logging.WARNING, logger="wis2l_core.events.handlers")
    started = time.monotonic()
    outcome = await run_case(cluster, settings, victim)
    took = time.monotonic() - started
    print(f"\nNATS cluster, {outcome} in {took:.1f} s")
    assert outcome.unique == WRITES  # every event delivered
    assert outcome.event_ids == WRITES  # one event id per write
    assert outcome.in_stream == WRITES  # stored once each: the duplicate window held
    assert took < 60


async def test_replicas_are_raised_never_lowered_and_consumers_follow(
    cluster: NatsCluster, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    stream = settings.stream_name
    caplog.set_level(logging.INFO, logger="wis2l_core.events")
    got: list[uuid.UUID] = []

    async def handler(event: ComponentCreated) -> None:
        got.append(event.id)

    async def open_bus(replicas: int, *, subscribe: bool = False) -> EventBus:
        bus = EventBus(attrs.evolve(settings, stream_replicas=replicas))
        if subscribe:
            bus.subscribe(ComponentCreated, handler, durable="follow")
        await bus.open(require=True)
        await bus.start_subscribers()
        return bus

    # made with one replica, and a consumer on it
    bus = await open_bus(1, subscribe=True)
    consumer = "follow-component-created"
    await eventually(lambda: _has_consumer(bus, stream, consumer), timeout=20)
    assert (await cluster.stream_info(stream)).config.num_replicas == 1
    await bus.close(1)

    # WIS2L_STREAM_REPLICAS=3: raised in place; the consumer follows the stream
    bus = await open_bus(3, subscribe=True)
    assert "raised stream" in caplog.text
    info = await cluster.stream_info(stream)
    assert info.config.num_replicas == 3
    assert info.cluster is not None
    assert len(info.cluster.replicas or []) == 2

    async def consumer_replicated() -> bool:
        try:
            ci = await bus.jetstream.consumer_info(stream, consumer)
        except TimeoutError:  # scaling up: not led for a moment
            return False
        return ci.cluster is not None and len(ci.cluster.replicas or []) == 2

    await eventually(consumer_replicated, timeout=20)
    await bus.close(1)

    # a lower setting never lowers the stream: it is kept, and logged
    caplog.clear()
    bus = await open_bus(1)
    assert bus.ready
    assert (await cluster.stream_info(stream)).config.num_replicas == 3
    assert "has 3 replicas, more than WIS2L_STREAM_REPLICAS=1: kept" in caplog.text
    await bus.close(1)

    # more than the cluster can place: logged, the stream keeps working with 3
    caplog.clear()
    bus = await open_bus(5)
    assert bus.ready
    assert "cannot raise stream" in caplog.text
    assert (await cluster.stream_info(stream)).config.num_replicas == 3
    await bus.jetstream.delete_stream(stream)

    # ...and a new stream the cluster cannot place is a clear ServiceUnavailable
    with pytest.raises(ServiceUnavailable, match="5 replica"):
        await bus.ensure_stream()
    await bus.close(1)


async def _has_consumer(bus: EventBus, stream: str, consumer: str) -> bool:
    try:
        await bus.jetstream.consumer_info(stream, consumer)
    except (nats.js.errors.NotFoundError, TimeoutError):  # not made, or not led yet
        return False
    return True


async def _consumer_leader(bus: EventBus, stream: str, consumer: str) -> str:
    leader = ""

    async def elected() -> bool:
        nonlocal leader
        try:
            info = await bus.jetstream.consumer_info(stream, consumer)
        except (nats.js.errors.NotFoundError, TimeoutError):  # not made, or not led yet
            return False
        leader = info.cluster.leader or "" if info.cluster is not None else ""
        return bool(leader)

    await eventually(elected, timeout=20)
    return leader
