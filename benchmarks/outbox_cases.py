"""The outbox relay: throughput from committed rows to JetStream acks, and latency.

Throughput: the runtime's relay is paused, ``count`` committed event rows are written,
and a fresh :class:`OutboxRelay` drains them (``relay_once()`` passes: claim, publish
asynchronously, wait for the acks, mark, commit) while the clock runs. The raw baseline
publishes the same number of messages with nats-py ``publish_async`` in windows of
2,000 and waits for every ack, with no database at all: once with only ``Nats-Msg-Id``
and once with the eight headers the relay sends (the CloudEvents ones; nats-py encodes
each header of each message, which alone costs the raw client about a third of its
rate). Library and raw alternate.

Latency: with the runtime's relay running, ``components.create`` is called at a steady
200 per second; a plain NATS subscription on the event's subject records when each
``ComponentCreated`` arrives. Latency = arrival - the moment ``create()`` returned
(i.e. after the commit).

Partitioned relays: 1, 2 and 4 relay *processes* (tests/outbox_relay_worker.py, 16
partitions, batches of 1,000) with the runtime's relay stopped. Once every process sees
the others, a backlog spread over 64 projects is committed at once and timed until the
last row is marked; each process reports what it published and the CPU it used, and the
CPU of the machine's postgres and nats-server processes is read from /proc over the same
interval, which shows where the time goes. Then the latency case again, with 1 and
4 relay processes publishing in alternating rounds (samples pooled per count) and the
writes spread over the 64 projects (each notification wakes only the relay that
publishes its partition: sql/migrations/0005).

Writer cost of that trigger: single-event write transactions (``insert_outbox`` and
commit, as a repository write makes) and 1,000-row batches, timed with the 0005 row
trigger (a NOTIFY per row with the partition key) and with the statement trigger it
replaced (one empty NOTIFY per statement), in alternating rounds on the run's database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import nats
import orjson
from nats.aio.msg import Msg

from benchmarks.env import Env
from benchmarks.harness import Config, Result, Target, stats_of
from wis2l_core.db.repository import event_params
from wis2l_core.db.sql import migrations, query_file
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


async def _raw_publish(
    js: nats.js.JetStreamContext, subject: str, count: int, *, cloudevents: bool = False
) -> float:
    """Publish ``count`` messages in windows, waiting for every ack; messages per second.

    With ``cloudevents`` each message carries the eight headers the relay sends (built
    by hand per message), else only ``Nats-Msg-Id``.
    """
    bodies = [
        orjson.dumps({"id": str(uuid.uuid4()), "type": "build.progress", "progress": i % 101})
        for i in range(count)
    ]
    source = "/wis2l-core/" + subject.split(".", 1)[0]
    start = time.perf_counter()
    for first in range(0, count, WINDOW):
        futures = []
        for body in bodies[first : first + WINDOW]:
            id_ = str(uuid.uuid4())
            headers = {"Nats-Msg-Id": id_}
            if cloudevents:
                headers |= {
                    "ce-specversion": "1.0",
                    "ce-type": "wis2l.build.progress",
                    "ce-source": source,
                    "ce-id": id_,
                    "ce-time": datetime.now(UTC).isoformat(),
                    "ce-datacontenttype": "application/json",
                    "content-type": "application/json",
                }
            futures.append(await js.publish_async(subject, body, headers=headers))
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
    ce: list[float] = []
    try:
        for i in range(repeats):  # alternate which side goes first
            if i % 2:
                raw.append(await _raw_publish(js, subject, count))
                ce.append(await _raw_publish(js, subject, count, cloudevents=True))
            lib.append(await _library_drain(env, count))
            if not i % 2:
                raw.append(await _raw_publish(js, subject, count))
                ce.append(await _raw_publish(js, subject, count, cloudevents=True))
    finally:
        await nc.close()
        await env.wis.relay.start()
    lib_rate, raw_rate, ce_rate = (statistics.median(x) for x in (lib, raw, ce))
    res.values |= {
        "library events/s": lib_rate,
        "raw publish_async msgs/s": raw_rate,
        "raw publish_async, CloudEvents headers, msgs/s": ce_rate,
    }
    share = lib_rate / raw_rate
    res.ratios["library / raw (throughput)"] = share
    res.ratios["library / raw with the same headers (throughput)"] = lib_rate / ce_rate
    res.targets.append(Target("events/s", lib_rate, 2000, ">=", "ev/s"))
    res.targets.append(
        Target("share of raw publishing", share, 0.8, ">=", ratio="library / raw (throughput)")
    )
    res.notes = (
        f"{count} committed rows drained by relay_once() passes (batches of 1,000, 8 per"
        f" transaction; HPUB written by events/_publish.py), median of {repeats}; raw:"
        f" publish_async in windows of {WINDOW}, with the Nats-Msg-Id header only, and with"
        " the relay's eight headers"
    )
    return res


async def _latency_samples(
    env: Env, config: Config, projects: list[UUID] | None, seconds: float
) -> tuple[list[float], float, int]:
    """Commit-to-delivery samples (ms) at 200 events/s for ``seconds``; the rate
    achieved; how many were sent."""
    rate = 200
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
    pids = projects or [env.project_id]
    try:
        begin = time.perf_counter()
        for i in range(total):
            pause = begin + i / rate - time.perf_counter()
            if pause > 0:
                await asyncio.sleep(pause)
            made = await env.wis.components.create(
                project_id=pids[i % len(pids)], name="Lat", language="lua", code="print(1)"
            )
            committed[made.id] = time.perf_counter()
        achieved = total / (time.perf_counter() - begin)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(everything.wait(), 10)
    finally:
        await sub.unsubscribe()
        await nc.close()
    samples = [(arrived[k] - committed[k]) * 1000 for k in committed if k in arrived]
    return samples, achieved, total


def _latency_result(name: str, samples: list[float], achieved: float, total: int) -> Result:
    res = Result(f"outbox commit-to-delivery @200/s{name}")
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
        f"{total} components.create at 200/s (achieved {achieved:.0f}/s); a core NATS"
        " subscription on the subject timestamps arrival; relay woken by LISTEN/NOTIFY"
    )
    return res


async def latency(
    env: Env, config: Config, projects: list[UUID] | None = None, name: str = ""
) -> Result:
    """Commit-to-delivery latency at 200 events/s (over ``projects`` in turn if given)."""
    seconds = 0.5 if config.quick else 5.0
    return _latency_result(name, *await _latency_samples(env, config, projects, seconds))


WORKER = Path(__file__).resolve().parents[1] / "tests" / "outbox_relay_worker.py"
RELAY_PROJECTS = 64
PARTITIONS = 16


def _cpu_of(names: set[str]) -> dict[int, float]:
    """CPU seconds used so far by each process whose command is in ``names``, by pid."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = stat.read_text()
            comm = text[text.index("(") + 1 : text.rindex(")")]
            if comm in names:
                fields = text[text.rindex(")") + 2 :].split()
                out[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def _cpu_since(before: dict[int, float], names: set[str]) -> float:
    """CPU seconds used since ``before`` by the processes alive now (new ones count from
    zero; ones that exited meanwhile are left out)."""
    return sum(used - before.get(pid, 0.0) for pid, used in _cpu_of(names).items())


class _RelayProcesses:
    """``n`` relay worker processes on the bench's database and stream."""

    def __init__(self, env: Env, n: int, tmp: Path) -> None:
        self.n, self.tmp = n, tmp
        base = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_"))}
        self.env = base | {
            "DATABASE_URL": env.settings.database_url,
            "REDIS_URL": env.settings.redis_url,
            "NATS_URL": ",".join(env.settings.nats_urls),
            "WIS2L_NAMESPACE": env.settings.namespace,
            "WIS2L_STREAM": env.settings.stream_name,
            "WIS2L_OUTBOX_PARTITIONS": str(PARTITIONS),
            "WIS2L_ENV": "development",
        }
        self.procs: list[subprocess.Popen[bytes]] = []

    def status(self) -> list[dict[str, Any]]:
        out = []
        for i in range(self.n):
            try:
                out.append(json.loads((self.tmp / f"relay-{i}.json").read_text()))
            except (OSError, ValueError):
                out.append({})
        return out

    def _spawn(self) -> None:
        for i in range(self.n):
            args = [str(self.tmp / f"relay-{i}.json"), "10", "1.0", "0", "1000"]
            with (self.tmp / f"relay-{i}.log").open("wb") as log:  # the child keeps its copy
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, str(WORKER), *args],
                        env=self.env,
                        stdout=subprocess.DEVNULL,
                        stderr=log,
                    )
                )

    async def __aenter__(self) -> _RelayProcesses:
        self._spawn()
        deadline = time.monotonic() + 60
        while not all(s.get("relays") == self.n for s in self.status()):
            if time.monotonic() > deadline:
                raise RuntimeError("relay processes did not see each other in 60 s")
            await asyncio.sleep(0.05)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                await asyncio.to_thread(proc.wait, 10)
            except subprocess.TimeoutExpired:
                proc.kill()
        for i in range(self.n):
            (self.tmp / f"relay-{i}.json").unlink(missing_ok=True)


async def _write_spread(env: Env, projects: list[UUID], count: int) -> None:
    text = query_file("events")["insert_outbox"].text
    params = [
        event_params(BuildProgress(project_id=p, build_id=p, progress=i % 101))
        for i in range(count)
        for p in [projects[i % len(projects)]]
    ]
    async with env.wis.database.connection() as conn, conn.transaction(), conn.cursor() as cur:
        await cur.executemany(text, params)


async def _drain_with(env: Env, n: int, projects: list[UUID], count: int, tmp: Path) -> Result:
    res = Result(f"outbox relays x{n} (processes)")
    async with _RelayProcesses(env, n, tmp) as relays:
        before = relays.status()
        servers_before = _cpu_of({"postgres", "nats-server"})
        await _write_spread(env, projects, count)
        start = time.perf_counter()
        for _ in range(100_000):  # 10 ms polls, up to about 17 minutes
            if not (await env.wis.relay.backlog()).size:
                break
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - start
        servers = _cpu_since(servers_before, {"postgres", "nats-server"})
        await asyncio.sleep(0.2)  # the workers' last status
        after = relays.status()
    per = [a["published"] - b["published"] for a, b in zip(after, before, strict=True)]
    cpu = [a["cpu_s"] - b["cpu_s"] for a, b in zip(after, before, strict=True)]
    res.values |= {"events/s (all relays)": count / elapsed}
    for i, (done, used) in enumerate(zip(per, cpu, strict=True)):
        res.values[f"relay {i} events/s"] = done / elapsed
        res.values[f"relay {i} CPU (cores)"] = used / elapsed
        res.values[f"relay {i} home partitions"] = float(len(after[i].get("home", ())))
    res.values["postgres + nats-server CPU (cores)"] = servers / elapsed
    res.values["load average (1 min)"] = os.getloadavg()[0]
    res.notes = (
        f"{count} rows over {len(projects)} projects, {PARTITIONS} partitions, drained by"
        f" {n} relay processes (batches of 1,000); CPU over the drain, from os.times() and"
        " /proc (postgres and nats-server include other databases' work on a shared host)"
    )
    return res


async def relays(env: Env, config: Config) -> list[Result]:
    """Throughput with 1, 2 and 4 relay processes, then latency with 4."""
    count = 2000 if config.quick else 20_000
    projects = [await env.new_project() for _ in range(RELAY_PROJECTS)]
    out = []
    await env.wis.relay.stop(5)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for n in (1, 2, 4):
                out.append(await _drain_with(env, n, projects, count, Path(tmp)))
            # Alternating rounds (1, 4, 4, 1, ...), samples pooled per count: a shared
            # machine's load drifts, and one window each would compare two loads.
            rounds = 1 if config.quick else 4
            seconds = 0.5 if config.quick else 2.5
            pooled: dict[int, tuple[list[float], list[float], int]] = {
                1: ([], [], 0),
                4: ([], [], 0),
            }
            for r in range(rounds):
                for n in (1, 4) if r % 2 == 0 else (4, 1):
                    async with _RelayProcesses(env, n, Path(tmp)):
                        samples, achieved, total = await _latency_samples(
                            env, config, projects, seconds
                        )
                    got, rates, sent = pooled[n]
                    pooled[n] = (got + samples, [*rates, achieved], sent + total)
            lat = {
                n: _latency_result(f", {n} relay processes", got, statistics.median(rates), sent)
                for n, (got, rates, sent) in pooled.items()
            }
            for res in lat.values():
                res.notes += f"; {rounds} alternating rounds of {seconds:g} s, pooled"
    finally:
        await env.wis.relay.start()
    one, four = (lat[n].ops["commit -> delivery"].median_ms for n in (1, 4))
    lat[4].ratios["p50 with 4 relays / with 1"] = four / one
    lat[4].targets.append(
        Target("p50 vs 1 relay", four / one, 2.0, "<=", ratio="p50 with 4 relays / with 1")
    )
    return [*out, *lat.values()]


_STATEMENT_TRIGGER = """
CREATE OR REPLACE FUNCTION wis2l_bench_notify_statement() RETURNS trigger
LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_notify('wis2l_outbox', ''); RETURN NULL; END; $$;
DROP TRIGGER events_notify ON events;
CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION wis2l_bench_notify_statement();
"""


async def _run_sql(env: Env, script: str) -> None:
    """Run ``script`` (several statements, no parameters) in one transaction."""
    async with env.wis.database.connection() as conn, conn.transaction():
        await conn.execute(script.encode())


async def _timed_writes(env: Env, projects: list[UUID], count: int) -> tuple[list[float], float]:
    """``count`` one-event write transactions (ms each), then the rows/s of one batch."""
    text = query_file("events")["insert_outbox"].text
    samples = []
    async with env.wis.database.connection() as conn:
        for i in range(count):
            params = event_params(
                BuildProgress(
                    project_id=projects[i % len(projects)], build_id=projects[0], progress=i % 101
                )
            )
            start = time.perf_counter()
            async with conn.transaction():
                await conn.execute(text, params, prepare=True)
            samples.append((time.perf_counter() - start) * 1000)
        batch = [
            event_params(BuildProgress(project_id=p, build_id=p, progress=1))
            for i in range(1000)
            for p in [projects[i % len(projects)]]
        ]
        start = time.perf_counter()
        async with conn.transaction(), conn.cursor() as cur:
            await cur.executemany(text, batch)
        return samples, len(batch) / (time.perf_counter() - start)


async def writer_cost(env: Env, config: Config) -> Result:
    """What the per-partition NOTIFY costs a writer, against the statement NOTIFY."""
    res = Result("outbox NOTIFY: writer cost")
    count, rounds = (50, 2) if config.quick else (500, 3)
    projects = [await env.new_project() for _ in range(8)]
    row_trigger = next(m.text for m in migrations() if m.name.startswith("0005_"))
    lat: dict[str, list[float]] = {"row trigger (0005)": [], "statement trigger (before)": []}
    rate: dict[str, list[float]] = {name: [] for name in lat}
    await env.wis.relay.stop(5)
    try:
        for i in range(rounds):
            for name in sorted(lat, reverse=bool(i % 2)):  # alternate which goes first
                ddl = row_trigger if name.startswith("row") else _STATEMENT_TRIGGER
                await _run_sql(env, ddl)
                samples, per_s = await _timed_writes(env, projects, count)
                lat[name] += samples
                rate[name].append(per_s)
    finally:
        await _run_sql(env, row_trigger)
        await _run_sql(env, "UPDATE events SET published_at = now() WHERE published_at IS NULL")
        await env.wis.relay.start()
    for name, samples in lat.items():
        res.ops[f"one-event write, {name}"] = stats_of(samples, unit_ns=False)
        res.values[f"1,000-row batch rows/s, {name}"] = statistics.median(rate[name])
    now, before = (f"one-event write, {n}" for n in lat)
    res.ratio("write latency, row / statement trigger", now, before)
    res.ratios["batch rows/s, row / statement trigger"] = (
        res.values["1,000-row batch rows/s, row trigger (0005)"]
        / res.values["1,000-row batch rows/s, statement trigger (before)"]
    )
    res.notes = (
        f"{count} one-event transactions (insert_outbox, commit) per round over 8 projects,"
        f" then one 1,000-row executemany; {rounds} alternating rounds per trigger; the"
        " relay stopped meanwhile"
    )
    return res


async def run(env: Env, config: Config) -> list[Result]:
    """The outbox cases."""
    return [
        await throughput(env, config),
        await latency(env, config),
        *await relays(env, config),
        await writer_cost(env, config),
    ]
