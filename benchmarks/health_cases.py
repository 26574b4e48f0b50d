"""``health()`` with Redis dead: it must return within its timeout + 50 ms.

Two kinds of dead: a port nobody listens on (connection refused at once), and a
black hole that accepts connections and never answers (the check must be cut off by
its timeout). Each gets its own runtime on the run's database with ``health_timeout``
0.5 s; its outbox relay is stopped so it does not publish the main runtime's events.
"""

from __future__ import annotations

import asyncio
import socket
import time

from benchmarks.env import Env, settings_for
from benchmarks.harness import Config, Result, Target, stats_of
from wis2l_core import Wis2l

__all__ = ["run"]

TIMEOUT = 0.5


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def _health_times(env: Env, redis_url: str, calls: int) -> tuple[list[float], str]:
    settings = settings_for(
        env.servers, env.settings.database_url, redis_url=redis_url, health_timeout=TIMEOUT
    )
    wis = Wis2l(settings, seed_subscribers=False)
    await wis.start()
    await wis.relay.stop(2)
    times: list[float] = []
    status = ""
    try:
        for _ in range(calls):
            start = time.perf_counter()
            report = await wis.health()
            times.append((time.perf_counter() - start) * 1000)
            status = f"{report.status.value}; redis: {report.checks['redis'].error}"
    finally:
        await wis.stop()
    return times, status


async def health_dead(env: Env, config: Config) -> Result:
    """health() with Redis refusing connections, and with Redis hanging."""
    res = Result("health() with redis dead")
    calls = 3 if config.quick else 10

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers; returns when the client goes away
        writer.close()

    hole = await asyncio.start_server(swallow, "127.0.0.1", 0)
    hole_port = hole.sockets[0].getsockname()[1]
    try:
        refused, refused_status = await _health_times(
            env, f"redis://127.0.0.1:{_dead_port()}/0", calls
        )
        hung, hung_status = await _health_times(env, f"redis://127.0.0.1:{hole_port}/0", calls)
    finally:
        hole.close()
    res.ops["refused port"] = stats_of(refused, unit_ns=False)
    res.ops["black hole"] = stats_of(hung, unit_ns=False)
    limit = TIMEOUT * 1000 + 50
    res.targets.append(Target("refused: slowest call", max(refused), limit, "<=", "ms"))
    res.targets.append(Target("black hole: slowest call", max(hung), limit, "<=", "ms"))
    res.notes = (
        f"health_timeout {TIMEOUT} s, {calls} calls each; last report: refused -> "
        f"{refused_status}; black hole -> {hung_status}"
    )
    return res


async def run(env: Env, config: Config) -> list[Result]:
    """The health case."""
    return [await health_dead(env, config)]
