"""The measuring harness: interleaved rounds, statistics, results and targets.

Every case times the library call and its raw-driver baseline in the same process, in
the same rounds: each round runs ``iterations`` calls of every operation, one operation
after another, and the order of the operations rotates from round to round, so that
neither side always runs first (on a warm cache, a fresh socket buffer, a quiet core).
One warm-up round is run first and thrown away.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

__all__ = ["Config", "Result", "Stats", "Target", "measure", "stats_of"]

Op = Callable[[], Awaitable[Any]]


@attrs.frozen
class Config:
    """How much to measure.

    Attributes:
        rounds: interleaved rounds per case.
        scale: multiplies every case's iteration count (the ``--quick`` run uses a tiny one).
        quick: a smoke run: few iterations, short timed phases; numbers mean little.
    """

    rounds: int = 10
    scale: float = 1.0
    quick: bool = False

    def n(self, base: int) -> int:
        """``base`` iterations scaled, at least 1."""
        return max(1, round(base * self.scale))


@attrs.frozen
class Stats:
    """Latency statistics of one operation, in milliseconds."""

    n: int
    median_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float

    def to_dict(self) -> dict[str, float]:
        """A JSON-ready dict."""
        return attrs.asdict(self)


def stats_of(samples_ns: list[int] | list[float], *, unit_ns: bool = True) -> Stats:
    """Statistics of ``samples_ns`` (nanoseconds, or milliseconds with ``unit_ns=False``)."""
    factor = 1e-6 if unit_ns else 1.0
    ms = sorted(s * factor for s in samples_ns)
    if not ms:
        return Stats(0, float("nan"), float("nan"), float("nan"), float("nan"))
    p99 = ms[min(len(ms) - 1, max(0, round(0.99 * len(ms)) - 1))]
    return Stats(
        n=len(ms),
        median_ms=statistics.median(ms),
        p99_ms=p99,
        mean_ms=statistics.fmean(ms),
        min_ms=ms[0],
    )


@attrs.frozen
class Target:
    """A target from issue 8, reported (met or not), never asserted.

    Attributes:
        name: what is compared, e.g. ``"ratio vs pool"``.
        value: the measured value.
        limit: the target.
        op: ``"<="`` or ``">="``.
        unit: how to print the value (``"x"``, ``"ms"``, ``"ev/s"``).
        ratio: the name of the ratio in :attr:`Result.ratios` it judges, if any.
    """

    name: str
    value: float
    limit: float
    op: str
    unit: str = "x"
    ratio: str | None = None

    @property
    def met(self) -> bool:
        """Whether the measured value meets the target."""
        return self.value <= self.limit if self.op == "<=" else self.value >= self.limit

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "name": self.name,
            "value": self.value,
            "limit": self.limit,
            "op": self.op,
            "unit": self.unit,
            "met": self.met,
            "ratio": self.ratio,
        }


@attrs.define
class Result:
    """What one case measured.

    Attributes:
        case: its name, e.g. ``"users.find_by_id"``.
        ops: latency statistics per operation (``"library"``, ``"raw (pool)"``, ...).
        ratios: named ratios (library / raw, by median).
        targets: the issue's targets for this case.
        values: other measured figures (throughput, ...).
        notes: how it was measured, in a line or two.
        skipped: why the case did not run, or ``None``.
    """

    case: str
    ops: dict[str, Stats] = attrs.Factory(dict)
    ratios: dict[str, float] = attrs.Factory(dict)
    targets: list[Target] = attrs.Factory(list)
    values: dict[str, float] = attrs.Factory(dict)
    notes: str = ""
    skipped: str | None = None

    def ratio(self, name: str, lib: str, raw: str) -> float:
        """Record and return median(``lib``) / median(``raw``) as ``name``."""
        value = self.ops[lib].median_ms / self.ops[raw].median_ms
        self.ratios[name] = value
        return value

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "case": self.case,
            "ops": {k: v.to_dict() for k, v in self.ops.items()},
            "ratios": self.ratios,
            "targets": [t.to_dict() for t in self.targets],
            "values": self.values,
            "notes": self.notes,
            "skipped": self.skipped,
        }


async def measure(ops: dict[str, Op], *, iterations: int, config: Config) -> dict[str, Stats]:
    """Time every operation in ``ops``, interleaved in ``config.rounds`` rounds.

    Each call is timed on its own with ``perf_counter_ns``. A first round of
    ``max(1, iterations // 5)`` calls per operation warms up and is discarded.

    Returns:
        Statistics per operation name.
    """
    names = list(ops)
    samples: dict[str, list[int]] = {name: [] for name in names}
    clock = time.perf_counter_ns
    for name in names:  # warm-up: prepared statements, pools, JIT-free but cache-warm
        for _ in range(max(1, iterations // 5)):
            await ops[name]()
    for round_ in range(config.rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            op, out = ops[name], samples[name]
            for _ in range(iterations):
                start = clock()
                await op()
                out.append(clock() - start)
    return {name: stats_of(samples[name]) for name in names}
