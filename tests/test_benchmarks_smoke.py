"""The benchmark suite runs end to end (a tiny ``--quick`` run; nothing here is timed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wis2l_core.testing.servers import Servers

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_run_writes_every_case(
    wis2l_servers: Servers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(ROOT))  # benchmarks/ is a top-level package, not installed
    from benchmarks.harness import Config
    from benchmarks.suite import run_suite

    out = tmp_path / "latest.json"
    results = run_suite(
        Config(rounds=2, scale=0.02, quick=True), json_path=out, servers=wis2l_servers
    )

    doc = json.loads(out.read_text())
    cases = {r["case"] for r in doc["results"]}
    assert {
        "users.find_by_id",
        "components.create",
        "tokens.sync (1,000)",
        "cache.get",
        "bus.publish",
        "outbox relay throughput",
        "outbox commit-to-delivery @200/s",
        "outbox commit-to-delivery @200/s, 1 relay processes",
        "outbox commit-to-delivery @200/s, 4 relay processes",
        "outbox NOTIFY: writer cost",
        "health() with redis dead",
        "peer: find_by_id",
        "peer: page of 50",
        "token verification (warm keys)",
        "auth middleware per request",
        "rate limit redis round trips",
        "outbox relay throughput, trace context",
        "trace context bytes",
    } <= cases
    assert any(case.startswith("studio table page") for case in cases)
    ran = [r for r in results if r.skipped is None]
    assert ran, "every case was skipped"
    for res in ran:
        for name, stats in res.ops.items():
            assert stats.n > 0, f"{res.case}: {name} has no samples"
            assert stats.median_ms > 0
        for target in res.targets:  # reported, never asserted: only that it was measured
            assert target.value == target.value, f"{res.case}: {target.name} is NaN"
    delivered = next(r for r in results if r.case.startswith("outbox commit"))
    assert delivered.values["delivered"] == delivered.values["sent"]
