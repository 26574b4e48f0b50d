"""Partitioned outbox relays in separate processes (tests/outbox_relay_worker.py).

Each test starts relay processes on its own database and stream, writes events for many
projects from this process while they run, and then reads the whole stream back: every
event exactly once (counted by ``Nats-Msg-Id``) and each project's events in ``seq``
order. A relay SIGKILLed or SIGSTOPped mid-batch (between publish and mark: the worker
holds each batch's acks for ``ACK_DELAY``) must have its partitions taken over within
``BOUND`` seconds; the figures measured are printed (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO

import attrs
import nats
import nats.errors
import pytest
from nats.js.api import DeliverPolicy
from tests.helpers import eventually

from wis2l_core.config import Settings
from wis2l_core.db.pool import Database
from wis2l_core.db.repository import event_params
from wis2l_core.db.sql import query_file
from wis2l_core.events import BuildProgress, EventBus
from wis2l_core.events.outbox import home_partitions
from wis2l_core.runtime import Repositories
from wis2l_core.testing.plugin import drop_stream

pytestmark = [pytest.mark.slow, pytest.mark.timing]

WORKER = Path(__file__).with_name("outbox_relay_worker.py")
LEASE = 2.0
POLL = 0.2
ACK_DELAY = 0.3
PARTITIONS = 16
BOUND = LEASE + 4.0
"""Takeover bound asserted: the lease, then up to a second to notice (heartbeat, relays
query, poll), then a pass; generous on a shared 2-core machine."""

PARTITION_OF = """SELECT p AS project_id,
    mod(uuid_hash_extended(p, 0) & 9223372036854775807, %(n)s::bigint)::int AS part
FROM unnest(%(ids)s::uuid[]) AS p"""


@attrs.define
class Relay:
    proc: subprocess.Popen[bytes]
    status: Path
    log: BinaryIO

    def state(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.status.read_text()))
        except (FileNotFoundError, json.JSONDecodeError):
            return {}


@attrs.define
class Cluster:
    settings: Settings
    db: Database
    tmp: Path
    projects: dict[uuid.UUID, int] = attrs.Factory(dict)  # project -> partition
    relays: list[Relay] = attrs.Factory(list)
    written: list[BuildProgress] = attrs.Factory(list)

    def start(self, count: int) -> list[Relay]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_"))}
        env |= {
            "DATABASE_URL": self.settings.database_url,
            "REDIS_URL": self.settings.redis_url,
            "NATS_URL": ",".join(self.settings.nats_urls),
            "WIS2L_NAMESPACE": self.settings.namespace,
            "WIS2L_STREAM": self.settings.stream_name,
            "WIS2L_OUTBOX_PARTITIONS": str(PARTITIONS),
            "WIS2L_ENV": "development",
        }
        started = []
        for _ in range(count):
            n = len(self.relays)
            log = (self.tmp / f"relay-{n}.log").open("wb")
            args = [str(WORKER), str(self.tmp / f"relay-{n}.json"), str(LEASE), str(POLL)]
            proc = subprocess.Popen(
                [sys.executable, *args, str(ACK_DELAY)], env=env, stdout=log, stderr=log
            )
            relay = Relay(proc, self.tmp / f"relay-{n}.json", log)
            self.relays.append(relay)
            started.append(relay)
        return started

    async def settled(self, live: list[Relay]) -> None:
        """Wait until every live relay sees exactly the live relays, and check that their
        home partitions split all partitions between them."""

        def agreed() -> bool:
            states = [r.state() for r in live]
            return all(s.get("relays") == len(live) for s in states)

        await eventually(agreed, timeout=30)
        homes = [set(r.state()["home"]) for r in live]
        assert sorted(p for h in homes for p in h) == list(range(PARTITIONS))
        ids = frozenset(r.state()["relay"] for r in live)
        for relay, home in zip(live, homes, strict=True):
            assert home == set(home_partitions(relay.state()["relay"], ids, PARTITIONS))

    async def make_projects(self, count: int) -> None:
        repos = Repositories(self.db)
        for _ in range(count):
            tag = secrets.token_hex(4)
            user = await repos.users.create(email=f"{tag}@x.io", name="U", subject=tag)
            project = await repos.projects.create(
                owner_id=user.id, name="P", slug=f"p-{tag}", engine="web"
            )
            self.projects[project.id] = -1
        rows = await self.db.fetch_all(PARTITION_OF, {"n": PARTITIONS, "ids": list(self.projects)})
        self.projects = {r["project_id"]: r["part"] for r in rows}
        async with self.db.connection() as c:  # the setup's own events are not under test
            await c.execute("DELETE FROM events")

    async def write(self, projects: list[uuid.UUID], per_project: int = 1) -> list[BuildProgress]:
        """One transaction with ``per_project`` events for each of ``projects``."""
        text = query_file("events")["insert_outbox"].text
        events = [
            BuildProgress(project_id=p, build_id=p, progress=i % 101)
            for i in range(per_project)
            for p in projects
        ]
        async with self.db.connection() as c, c.transaction():
            for e in events:
                await c.execute(text, event_params(e))
        self.written += events
        return events

    async def writer(self, stop: asyncio.Event) -> None:
        """Small transactions for every project, one after the other, until ``stop``:
        about 300 events/s, which one relay alone keeps up with (a batch of up to 200
        every ACK_DELAY, two in flight), so a takeover time is not a backlog's."""
        projects = list(self.projects)
        while not stop.is_set():
            for p in projects:
                await self.write([p], per_project=2)
            await asyncio.sleep(0.08)

    async def published(self, events: list[BuildProgress]) -> bool:
        rows = await self.db.fetch_all(
            "SELECT count(*) AS n FROM events WHERE id = ANY(%(ids)s::uuid[])"
            " AND published_at IS NOT NULL",
            {"ids": [e.id for e in events]},
        )
        return int(rows[0]["n"]) == len(events)

    async def takeover(self, victim: Relay, signum: signal.Signals) -> float:
        """Signal ``victim`` mid-batch, write one event for every project of its home
        partitions, return the seconds until all of them are published."""
        home = set(victim.state()["home"])
        mine = [p for p, part in self.projects.items() if part in home]
        assert mine, "no project in the victim's partitions"
        await eventually(lambda: victim.state().get("inflight", 0) > 0, timeout=10, interval=0.005)
        victim.proc.send_signal(signum)
        signalled = time.perf_counter()
        events = await self.write(mine)
        try:
            await eventually(lambda: self.published(events), timeout=30, interval=0.05)
        except AssertionError:
            await self.dump()
            raise
        return time.perf_counter() - signalled

    async def dump(self) -> None:
        """Print what the relays and the server say (on a failure, to tell why)."""
        print("relays:", [r.state() for r in self.relays])
        for query in [
            "SELECT pid, application_name, state, state_change, xact_start"
            " FROM pg_stat_activity WHERE datname = current_database()",
            "SELECT pid, classid, objid, granted FROM pg_locks WHERE locktype = 'advisory'",
        ]:
            for row in await self.db.fetch_all(query):
                print(row)
        for log in sorted(self.tmp.glob("relay-*.log")):
            print(log.name, log.read_text()[-2000:])

    async def check_stream(self, bus: EventBus) -> None:
        """Every event written is in the stream exactly once, each project's in seq order."""
        rows = await self.db.fetch_all("SELECT id, seq, published_at FROM events")
        seq = {str(r["id"]): r["seq"] for r in rows}
        assert all(r["published_at"] is not None for r in rows)
        sub = await bus.jetstream.subscribe(
            f"{bus.namespace}.>",
            stream=bus.settings.stream_name,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
        )
        got: list[tuple[str, str]] = []
        with contextlib.suppress(nats.errors.TimeoutError):
            while True:
                msg = await sub.next_msg(timeout=1.0)
                got.append(((msg.headers or {})["Nats-Msg-Id"], json.loads(msg.data)["project_id"]))
        await sub.unsubscribe()
        counts = Counter(i for i, _ in got)
        assert counts.most_common(1)[0][1] == 1, "an event is in the stream twice"
        assert set(counts) == {str(e.id) for e in self.written}
        for project in self.projects:
            order = [seq[i] for i, p in got if p == str(project)]
            assert order == sorted(order), f"project {project}: out of seq order"

    def stop_all(self) -> None:
        for relay in self.relays:
            if relay.proc.poll() is None:
                relay.proc.send_signal(signal.SIGCONT)
                relay.proc.terminate()
        for relay in self.relays:
            try:
                relay.proc.wait(10)
            except subprocess.TimeoutExpired:
                relay.proc.kill()
                relay.proc.wait(5)
            relay.log.close()


@pytest.fixture
async def cluster(wis2l_settings: Settings, tmp_path: Path) -> AsyncIterator[Cluster]:
    settings = attrs.evolve(wis2l_settings, outbox_partitions=PARTITIONS)
    db = Database(settings)
    await db.open()
    c = Cluster(settings, db, tmp_path)
    try:
        yield c
    finally:
        c.stop_all()
        await db.close()
        await drop_stream(settings)


@pytest.fixture
async def bus(cluster: Cluster) -> AsyncIterator[EventBus]:
    b = EventBus(cluster.settings)
    await b.open()
    yield b
    await b.close(2)


async def _run_writer(cluster: Cluster, seconds: float) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(cluster.writer(stop))
    await asyncio.sleep(seconds)
    stop.set()
    await task


async def test_three_relays_split_the_partitions_keep_project_order_and_publish_once(
    cluster: Cluster, bus: EventBus
) -> None:
    await cluster.make_projects(12)
    relays = cluster.start(3)
    await cluster.settled(relays)
    await _run_writer(cluster, 3.0)
    await eventually(lambda: cluster.published(cluster.written), timeout=30)
    await cluster.check_stream(bus)
    busy = {cluster.projects[e.project_id] for e in cluster.written if e.project_id}
    for relay in relays:
        state = relay.state()
        if busy & set(state["home"]):
            assert state["published"] > 0  # the work is shared, not taken by one relay
    assert sum(r.state()["published"] for r in relays) >= len(cluster.written)


@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"])
async def test_a_relay_killed_or_stopped_mid_batch_has_its_partitions_taken_over(
    cluster: Cluster, bus: EventBus, how: str
) -> None:
    await cluster.make_projects(12)
    survivor, victim = cluster.start(2)
    await cluster.settled([survivor, victim])
    stop = asyncio.Event()
    task = asyncio.create_task(cluster.writer(stop))
    try:
        took = await cluster.takeover(victim, signal.Signals[how])
        print(f"\n{how}: partitions taken over, new events published after {took:.2f} s")
        assert took < BOUND
        if how == "SIGSTOP":
            victim.proc.send_signal(signal.SIGCONT)  # its late acks arrive now
            await cluster.settled([survivor, victim])  # it is back and has home partitions
            await asyncio.sleep(1.0)
    finally:
        stop.set()
        await task
    await eventually(lambda: cluster.published(cluster.written), timeout=30)
    await cluster.check_stream(bus)
    if how == "SIGSTOP":
        assert victim.proc.poll() is None  # it went on working after its pass was refused
