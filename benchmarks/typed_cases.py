"""Typed queries (issue 22): a generated function against ``wis.database.fetch_one``, and
the time ``wis2l db generate`` takes for 500 queries on a warm database."""

from __future__ import annotations

import importlib.util
import statistics
import tempfile
import time
from pathlib import Path
from types import ModuleType

from benchmarks.env import Env
from benchmarks.harness import Config, Result, Target, measure
from wis2l_core.db.generate import describe_files, read_folders, write_modules
from wis2l_core.db.sql import query_file, sql_root

__all__ = ["run"]


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_generated_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ImportError(path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def find_by_id(env: Env, config: Config) -> Result:
    """``users.find_by_id`` generated from sql/queries/users.sql vs ``fetch_one``."""
    with tempfile.TemporaryDirectory(prefix="wis2l-bench-typed-") as tmp:
        out = Path(tmp)
        files = [f for f in read_folders([sql_root() / "queries"]) if f[0].stem == "users"]
        write_modules(out, describe_files(env.settings.database_url, files))
        users = _load(out / "users.py")
    query = query_file("users")["find_by_id"]
    db, key = env.wis.database, env.user_id

    async def generated() -> object:
        return await users.find_by_id(db, id=key)

    async def fetch_one() -> object:
        return await db.fetch_one(query, {"id": key})

    result = Result(
        "typed.users.find_by_id",
        notes="generated function (attrs row built by psycopg's args_row) vs "
        "wis.database.fetch_one (a dict) on the same prepared query",
    )
    result.ops = await measure(
        {"generated": generated, "fetch_one": fetch_one}, iterations=config.n(400), config=config
    )
    ratio = result.ratio("generated / fetch_one", "generated", "fetch_one")
    result.targets.append(
        Target("generated vs fetch_one", ratio, 1.03, "<=", ratio="generated / fetch_one")
    )
    return result


def _five_hundred(folder: Path) -> int:
    """50 files of 10 queries each: the library's own queries, renamed, joins included."""
    library = [q for f in read_folders([sql_root() / "queries"]) for q in f[1]]
    count = 0
    for index in range(50):
        blocks = []
        for n in range(10):
            query = library[(index * 10 + n) % len(library)]
            blocks.append(f"-- name: q{n}_{query.name}\n{query.text};\n")
            count += 1
        (folder / f"file_{index:02d}.sql").write_text("\n".join(blocks))
    return count


async def generate_500(env: Env, config: Config) -> Result:
    """Describe and render 500 queries (50 files) on the run's migrated, warm database."""
    with tempfile.TemporaryDirectory(prefix="wis2l-bench-gen-") as tmp:
        queries, out = Path(tmp) / "queries", Path(tmp) / "out"
        queries.mkdir()
        count = _five_hundred(queries)
        runs = []
        for _ in range(1 + (1 if config.quick else 3)):  # the first warms the catalog caches
            start = time.perf_counter()
            write_modules(out, describe_files(env.settings.database_url, read_folders([queries])))
            runs.append(time.perf_counter() - start)
    seconds = statistics.median(runs[1:])
    result = Result(
        "typed.generate_500",
        values={"queries": count, "seconds": seconds, "ms per query": seconds * 1000 / count},
        notes="wis2l db generate's work (prepare, describe, EXPLAIN for outer joins, render, "
        "write) for 500 queries; median of the warm runs",
    )
    result.targets.append(Target("500 queries", seconds, 2.0, "<=", unit="s"))
    return result


async def run(env: Env, config: Config) -> list[Result]:
    """The typed-query cases."""
    return [await find_by_id(env, config), await generate_500(env, config)]
