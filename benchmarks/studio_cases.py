"""Benchmark cases for the studio work (filled in by its issue)."""

from __future__ import annotations

from benchmarks.env import Env
from benchmarks.harness import Config, Result


async def run(env: Env, config: Config) -> list[Result]:
    """No cases yet."""
    return []
