"""Run the case groups against one environment and report."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from benchmarks import (
    arrow_cases,
    auth_cases,
    cache_bus_cases,
    db_cases,
    health_cases,
    outbox_cases,
    peer_cases,
    studio_cases,
    sync_cases,
    telemetry_cases,
    trace_context,
    typed_cases,
)
from benchmarks.env import Env, run_env, servers_and_database
from benchmarks.harness import Config, Result
from benchmarks.report import machine, table, write_chart, write_json
from wis2l_core.testing.servers import Servers

__all__ = ["GROUPS", "run_suite"]

log = logging.getLogger("benchmarks")

Group = Callable[[Env, Config], Awaitable[list[Result]]]

GROUPS: dict[str, Group] = {
    "db": db_cases.run,
    "cache_bus": cache_bus_cases.run,
    "outbox": outbox_cases.run,
    "health": health_cases.run,
    "auth": auth_cases.run,
    "studio": studio_cases.run,
    "peer": peer_cases.run,
    "typed": typed_cases.run,
    "telemetry": telemetry_cases.run,
    "trace": trace_context.run,
    "arrow": arrow_cases.run,
    "sync": sync_cases.run,
}
"""The case groups, in the order they run."""


async def _run_groups(
    servers: Servers, url: str, config: Config, groups: list[str]
) -> list[Result]:
    results: list[Result] = []
    async with run_env(servers, url) as env:
        for name in groups:
            start = time.perf_counter()
            results += await GROUPS[name](env, config)
            print(f"  {name}: {time.perf_counter() - start:.1f} s", flush=True)
    return results


def run_suite(
    config: Config,
    *,
    groups: list[str] | None = None,
    json_path: Path | None = None,
    chart_path: Path | None = None,
    servers: Servers | None = None,
) -> list[Result]:
    """Find the servers (unless given), run ``groups`` (default all), print and write results.

    Not a coroutine: making the template database runs its own event loop.
    """
    began = time.perf_counter()
    with servers_and_database(servers) as (found, url):
        results = asyncio.run(_run_groups(found, url, config, groups or list(GROUPS)))
        embedded = found.embedded
    took = time.perf_counter() - began
    print()
    print(table(results))
    print(f"\ntotal {took:.1f} s ({'embedded stack' if embedded else 'WIS2L_TEST_* servers'})")
    meta: dict[str, Any] = {
        "machine": machine(),
        "config": {"rounds": config.rounds, "scale": config.scale, "quick": config.quick},
        "embedded": embedded,
        "seconds": took,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if json_path is not None:
        write_json(results, json_path, meta=meta)
        print(f"wrote {json_path}")
    if chart_path is not None and write_chart(results, chart_path):
        print(f"wrote {chart_path}")
    return results
