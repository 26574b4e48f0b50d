"""Arrow (issue 23): ``to_arrow`` on 1,000,000 rows x 10 columns against ``fetch_all`` into
a pandas DataFrame, ConnectorX and ADBC's PostgreSQL driver (when they import), and its
peak memory against the Arrow table's size.

Memory is the resident set size of a fresh process (Linux: the peak ``VmHWM``, reset
through ``/proc/self/clear_refs`` just before the read, minus ``VmRSS`` then): what the
read added at its peak. tracemalloc would miss Arrow's own allocator.

``python -m benchmarks.arrow_cases --memory URL QUERY`` is that process.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from benchmarks.env import Env
from benchmarks.harness import Config, Result, Stats, Target, stats_of

__all__ = ["ROWS", "run"]

ROWS = 1_000_000
"""Rows of the benchmark table (``--quick``: 20,000)."""

TABLE = "bench_arrow"
QUERY = f"SELECT * FROM {TABLE}"

_CREATE = f"""
DROP TABLE IF EXISTS {TABLE};
CREATE TABLE {TABLE} AS
SELECT g::int8 AS id,
       gen_random_uuid() AS key,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second' AS at,
       date '2024-01-01' + (g % 365) AS day,
       (g % 1000) / 7.0::float8 AS score,
       ((g % 100000) / 100.0)::numeric(12, 2) AS amount,
       (g % 5000)::int4 AS count,
       g % 3 = 0 AS flag,
       'label ' || (g % 10000)::text AS label,
       (ARRAY['unity', 'godot', 'pico8', 'bevy'])[1 + g % 4] AS engine
FROM generate_series(1, %(rows)s::int) AS g;
ANALYZE {TABLE};
"""


def _status(field: str) -> int:
    """``VmRSS`` or ``VmHWM`` (the peak) of this process, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise LookupError(field)


def _reset_peak() -> None:
    """The peak (``VmHWM``) starts again from the current RSS."""
    Path("/proc/self/clear_refs").write_text("5")


async def _memory(url: str, query: str) -> dict[str, float]:
    """In this process: read ``query`` once to warm up on a few rows, then whole; the peak
    RSS while reading over the table's ``nbytes``."""
    import psycopg

    from wis2l_core.db.arrow import read_table

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await read_table(conn, query + " LIMIT 20000", None)
        _reset_peak()
        before = _status("VmRSS")
        table = await read_table(conn, query, None)
        peak = _status("VmHWM")
        return {"nbytes": table.nbytes, "peak_over_start": peak - before}


def memory_in_subprocess(url: str, query: str) -> dict[str, float]:
    """:func:`_memory` in a fresh interpreter (so ``ru_maxrss`` is this read's peak)."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)])}
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.arrow_cases", "--memory", url, query],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=root,
    )
    found: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return found


async def _time(
    ops: dict[str, Callable[[], Awaitable[object]]], runs: int
) -> tuple[dict[str, Stats], dict[str, float]]:
    """Each op ``runs`` times (after one warm-up), interleaved; a read of 1M rows is long
    enough that per-call timing is exact. Returns the wall-clock statistics, and each op's
    median CPU seconds in this process (PostgreSQL's own work not included; ConnectorX's
    and ADBC's threads are), which a busy machine disturbs less than wall time."""
    samples: dict[str, list[int]] = {name: [] for name in ops}
    cpu: dict[str, list[float]] = {name: [] for name in ops}
    for op in ops.values():
        await op()
    for round_ in range(runs):
        names = list(ops)
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            start, used = time.perf_counter_ns(), time.process_time()
            await ops[name]()
            samples[name].append(time.perf_counter_ns() - start)
            cpu[name].append(time.process_time() - used)
    stats = {name: stats_of(values) for name, values in samples.items()}
    return stats, {name: statistics.median(values) for name, values in cpu.items()}


def _peers(url: str) -> dict[str, Callable[[], Awaitable[object]]]:
    """ConnectorX and ADBC's PostgreSQL driver, each to an Arrow table, if they import."""
    peers: dict[str, Callable[[], Awaitable[object]]] = {}
    try:
        import connectorx
    except ImportError:
        pass
    else:

        async def connectorx_arrow() -> object:
            return await asyncio.to_thread(connectorx.read_sql, url, QUERY, return_type="arrow")

        peers["connectorx"] = connectorx_arrow
    try:
        import adbc_driver_postgresql.dbapi as adbc
    except ImportError:
        pass
    else:

        def adbc_read() -> object:
            with adbc.connect(url) as conn, conn.cursor() as cur:
                cur.execute(QUERY)
                return cur.fetch_arrow_table()

        async def adbc_arrow() -> object:
            return await asyncio.to_thread(adbc_read)

        peers["adbc"] = adbc_arrow
    return peers


async def to_arrow_vs_dataframe(env: Env, config: Config) -> Result:
    """One table of ``ROWS`` x 10 columns read whole by each reader."""
    import pandas

    rows = 20_000 if config.quick else ROWS
    db = env.wis.database
    await db.execute(_CREATE.replace("%(rows)s", str(rows)))
    url = env.settings.database_url

    async def to_arrow() -> object:
        return await db.to_arrow(QUERY)

    async def fetch_all_dataframe() -> object:
        return pandas.DataFrame(await db.fetch_all(QUERY))

    async def to_arrow_pandas() -> object:
        return (await db.to_arrow(QUERY)).to_pandas()

    ops = {
        "to_arrow": to_arrow,
        "to_arrow + to_pandas": to_arrow_pandas,
        "fetch_all -> DataFrame": fetch_all_dataframe,
        **_peers(url),
    }
    result = Result(
        f"to_arrow ({rows:,} rows x 10 columns)",
        notes="wis.database.to_arrow (binary COPY) vs fetch_all into pandas.DataFrame, "
        "ConnectorX (return_type='arrow') and ADBC's PostgreSQL driver; "
        "peak memory is RSS over the start, in a fresh process",
    )
    result.ops, cpu = await _time(ops, 1 if config.quick else 3)
    for name, seconds in cpu.items():
        result.values[f"{name} CPU s"] = seconds
    result.ratios["by CPU: fetch_all DataFrame / to_arrow"] = (
        cpu["fetch_all -> DataFrame"] / cpu["to_arrow"]
    )
    speed = result.ops["fetch_all -> DataFrame"].median_ms / result.ops["to_arrow"].median_ms
    result.ratios["fetch_all DataFrame / to_arrow"] = speed
    result.targets.append(Target("faster than fetch_all -> DataFrame", speed, 5.0, ">=", "x"))
    for peer in ("connectorx", "adbc"):
        if peer in result.ops:
            result.ratio(f"to_arrow / {peer}", "to_arrow", peer)
    memory = await asyncio.to_thread(memory_in_subprocess, url, QUERY)
    over = memory["peak_over_start"] / memory["nbytes"]
    result.values["table MB"] = memory["nbytes"] / 1e6
    result.values["peak RSS over start MB"] = memory["peak_over_start"] / 1e6
    result.targets.append(Target("peak memory / table nbytes", over, 1.5, "<="))
    await db.execute(f"DROP TABLE {TABLE}")
    return result


async def run(env: Env, config: Config) -> list[Result]:
    """The Arrow cases."""
    return [await to_arrow_vs_dataframe(env, config)]


if __name__ == "__main__":  # the memory probe's process
    if len(sys.argv) == 4 and sys.argv[1] == "--memory":
        found = asyncio.run(_memory(sys.argv[2], sys.argv[3]))
        print(json.dumps(found))
    else:
        print("usage: python -m benchmarks.arrow_cases --memory URL QUERY", file=sys.stderr)
        sys.exit(2)
