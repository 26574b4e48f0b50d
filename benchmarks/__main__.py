"""``python -m benchmarks [--quick] [--only GROUP ...] [--json PATH] [--chart PATH]``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from benchmarks.harness import Config
from benchmarks.suite import GROUPS, run_suite

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run the suite; exit code 0 (targets are reported, not enforced)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny iteration counts")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (10)")
    parser.add_argument("--scale", type=float, default=None, help="iteration multiplier (1.0)")
    parser.add_argument("--only", nargs="+", choices=list(GROUPS), help="run these groups")
    parser.add_argument(
        "--json", type=Path, default=ROOT / "benchmarks" / "results" / "latest.json"
    )
    parser.add_argument(
        "--chart",
        type=Path,
        default=None,
        help="PNG chart (default docs/img/performance.png; not written by --quick)",
    )
    args = parser.parse_args(argv)
    # The health case makes Redis fail on purpose: its warnings are expected.
    logging.basicConfig(level=logging.WARNING, format="  [log] %(name)s: %(message)s")
    if args.quick:
        config = Config(rounds=args.rounds or 2, scale=args.scale or 0.02, quick=True)
    else:
        config = Config(rounds=args.rounds or 10, scale=args.scale or 1.0)
    chart = args.chart
    if chart is None and not args.quick:
        chart = ROOT / "docs" / "img" / "performance.png"
    run_suite(config, groups=args.only, json_path=args.json, chart_path=chart)
    return 0


if __name__ == "__main__":
    sys.exit(main())
