"""The outbox relay: throughput from committed rows to JetStream acks, and latency.

Throughput: the runtime's relay is paused, ``count`` committed event rows are written,
and a fresh :class:`OutboxRelay` drains them (``relay_once()`` passes: claim, publish
asynchronously, wait for the acks, mark, commit) while the clock runs. The raw baseline
publishes the same number of messages with nats-py ``publish_async`` in windows of
2,000 and waits for every ack, with no database at all. Library and raw alternate.

Latency: with the runtime's relay running, ``components.create`` is called at a steady
200 per second; a plain NATS subscription on the event's subject records when each
``ComponentCreated`` arrives. Latency = arrival - the moment ``create()`` returned
(i.e. after the commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
import uuid
from uuid import UUID

import nats
import orjson
from nats.aio.msg import Msg

from benchmarks.env import Env
from benchmarks.harness import Config, Result, Target, stats_of
from wis2l_core.db.repository import event_params
from wis2l_core.db.sql import query_file
from wis2l_core.events import BuildProgress, ComponentCreated
from wis2l_core.events.outbox import OutboxRelay

__all__ = ["run"]

WINDOW = 2000


async def _write_backlog(env: Env, count: int) -> None:
    text = query_file("events")["insert_outbox"].text
    pid = env.project_id
    params = [
        event_params(BuildProgress(project_id=pid, build_id=pid, progress=i % 101))
        for i in range(count)
    ]
    async with env.wis.database.connection() as conn, conn.transaction(), conn.cursor() as cur:
        await cur.executemany(text, params)


async def _library_drain(env: Env, count: int) -> float:
    await _write_backlog(env, count)
    relay = OutboxRelay(env.settings, env.wis.database, env.wis.bus)
    start = time.perf_counter()
    done = 0
    while done < count:
        done += await relay.relay_once()
    return count / (time.perf_counter() - start)


async def _raw_publish(js: nats.js.JetStreamContext, subject: str, count: int) -> float:
    bodies = [
        orjson.dumps({"id": str(uuid.uuid4()), "type": "build.progress", "progress": i % 101})
        for i in range(count)
    ]
    start = time.perf_counter()
    for first in range(0, count, WINDOW):
        futures = [
            await js.publish_async(subject, body, headers={"Nats-Msg-Id": str(uuid.uuid4())})
            for body in bodies[first : first + WINDOW]
        ]
        await asyncio.gather(*futures)
    return count / (time.perf_counter() - start)


async def throughput(env: Env, config: Config) -> Result:
    """Events per second, committed row to JetStream ack, vs raw async publishing."""
    res = Result("outbox relay throughput")
    count = 500 if config.quick else 10_000
    repeats = 1 if config.quick else 5
    await env.wis.relay.stop(5)
    nc = await nats.connect(list(env.settings.nats_urls))
    js = nc.jetstream()
    subject = env.wis.bus.subject(BuildProgress)
    lib: list[float] = []
    raw: list[float] = []
    try:
        for i in range(repeats):  # alternate which side goes first
            if i % 2:
                raw.append(await _raw_publish(js, subject, count))
            lib.append(await _library_drain(env, count))
            if not i % 2:
                raw.append(await _raw_publish(js, subject, count))
    finally:
        await nc.close()
        await env.wis.relay.start()
    lib_rate, raw_rate = statistics.median(lib), statistics.median(raw)
    res.values |= {"library events/s": lib_rate, "raw publish_async msgs/s": raw_rate}
    share = lib_rate / raw_rate
    res.ratios["library / raw (throughput)"] = share
    res.targets.append(Target("events/s", lib_rate, 2000, ">=", "ev/s"))
    res.targets.append(
        Target("share of raw publishing", share, 0.5, ">=", ratio="library / raw (throughput)")
    )
    res.notes = (
        f"{count} committed rows drained by relay_once() passes (batches of 1,000, 8 per"
        f" transaction), median of {repeats}; raw: publish_async in windows of {WINDOW}"
    )
    return res


async def latency(env: Env, config: Config) -> Result:
    """Commit-to-delivery latency at 200 events/s."""
    res = Result("outbox commit-to-delivery @200/s")
    rate, seconds = 200, (0.5 if config.quick else 5.0)
    total = int(rate * seconds)
    committed: dict[UUID, float] = {}
    arrived: dict[UUID, float] = {}
    everything = asyncio.Event()

    async def on_msg(msg: Msg) -> None:
        arrived[UUID(orjson.loads(msg.data)["component_id"])] = time.perf_counter()
        if len(arrived) >= total:
            everything.set()

    nc = await nats.connect(list(env.settings.nats_urls))
    sub = await nc.subscribe(env.wis.bus.subject(ComponentCreated), cb=on_msg)
    await nc.flush()
    pid = env.project_id
    try:
        begin = time.perf_counter()
        for i in range(total):
            pause = begin + i / rate - time.perf_counter()
            if pause > 0:
                await asyncio.sleep(pause)
            made = await env.wis.components.create(
                project_id=pid, name="Lat", language="lua", code="print(1)"
            )
            committed[made.id] = time.perf_counter()
        achieved = total / (time.perf_counter() - begin)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(everything.wait(), 10)
    finally:
        await sub.unsubscribe()
        await nc.close()
    samples = [(arrived[k] - committed[k]) * 1000 for k in committed if k in arrived]
    stats = stats_of(samples, unit_ns=False)
    res.ops["commit -> delivery"] = stats
    res.values |= {
        "offered rate ev/s": achieved,
        "delivered": float(len(samples)),
        "sent": float(total),
    }
    res.targets.append(Target("latency p50", stats.median_ms, 20.0, "<=", "ms"))
    res.targets.append(Target("latency p99", stats.p99_ms, 100.0, "<=", "ms"))
    res.notes = (
        f"{total} components.create at {rate}/s (achieved {achieved:.0f}/s); a core NATS"
        " subscription on the subject timestamps arrival; relay woken by LISTEN/NOTIFY"
    )
    return res


async def run(env: Env, config: Config) -> list[Result]:
    """The outbox cases."""
    return [await throughput(env, config), await latency(env, config)]
