"""Printing, JSON and the chart of a run's results."""

from __future__ import annotations

import math
import platform
from pathlib import Path
from typing import Any

import orjson

from benchmarks.harness import Result

__all__ = ["machine", "table", "write_chart", "write_json"]


def machine() -> dict[str, Any]:
    """What the run ran on."""
    import os
    from importlib.metadata import version

    import psycopg

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "psycopg": version("psycopg"),
        "psycopg_impl": psycopg.pq.__impl__,
        "psycopg-pool": version("psycopg-pool"),
        "redis-py": version("redis"),
        "nats-py": version("nats-py"),
        "orjson": version("orjson"),
    }


def _fmt(value: float, unit: str) -> str:
    if math.isnan(value):
        return "n/a"
    if unit == "ev/s":
        return f"{value:,.0f} ev/s"
    if unit == "ms":
        return f"{value:.1f} ms"
    return f"{value:.2f}x"


def table(results: list[Result]) -> str:
    """The results as a Markdown table, then the targets (met / NOT met)."""
    lines = [
        "| case | operation | median ms | p99 ms | n |",
        "|---|---|---:|---:|---:|",
    ]
    for res in results:
        if res.skipped:
            lines.append(f"| {res.case} | {res.skipped} | | | |")
            continue
        for name, st in res.ops.items():
            lines.append(f"| {res.case} | {name} | {st.median_ms:.3f} | {st.p99_ms:.3f} | {st.n} |")
        for name, value in res.values.items():
            lines.append(f"| {res.case} | {name} | {value:,.1f} | | |")
    lines += ["", "| case | ratio / target | measured | target | met |", "|---|---|---:|---:|---|"]
    for res in results:
        for t in res.targets:
            met = "met" if t.met else "**NOT met**"
            lines.append(
                f"| {res.case} | {t.name} | {_fmt(t.value, t.unit)} | {t.op} "
                f"{_fmt(t.limit, t.unit)} | {met} |"
            )
        judged = {t.ratio for t in res.targets}
        for name, value in res.ratios.items():
            if name not in judged:
                lines.append(f"| {res.case} | {name} | {value:.2f}x | (reported) | |")
    return "\n".join(lines)


def write_json(results: list[Result], path: Path, *, meta: dict[str, Any]) -> None:
    """Write the results and ``meta`` (machine, settings, duration) as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"meta": meta, "results": [r.to_dict() for r in results]}
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))


def write_chart(results: list[Result], path: Path) -> bool:
    """A bar chart of the library / raw ratios with their targets; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels: list[str] = []
    values: list[float] = []
    limits: list[float | None] = []
    for res in results:
        judged = {t.ratio: t.limit for t in res.targets if t.ratio is not None}
        for name, value in res.ratios.items():
            if (
                name.startswith("raw ")
                or "throughput" in name
                or "separate" in name
                or "x1000" in name
            ):
                continue
            labels.append(f"{res.case}\n{name}")
            values.append(value)
            limits.append(judged.get(name))
    if not values:
        return False
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(values) + 1.5))
    ys = list(range(len(values)))[::-1]
    colors = [
        "#9a9a9a" if lim is None else "#4c9a5b" if v <= lim else "#c0504d"
        for v, lim in zip(values, limits, strict=True)
    ]
    ax.barh(ys, values, color=colors)
    for y, v, lim in zip(ys, values, limits, strict=True):
        if lim is not None:
            ax.plot([lim, lim], [y - 0.4, y + 0.4], color="black", linewidth=1.5)
        ax.text(max(v, lim or 0) + 0.02, y, f"{v:.2f}x", va="center", fontsize=8)
    ax.axvline(1.0, color="grey", linestyle=":", linewidth=1)
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel("median latency ratio, lower is better (black tick: target; grey: reported only)")
    ax.set_title("wis2l-core vs raw drivers and SQLAlchemy")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
