"""The ``wis2l`` command line: ``db``, ``dev``, ``events``, ``export``, ``health``, ``relay`` and
``studio``.

Each area registers its commands from its own module; a handler returns the exit code.
Configuration and connection problems print one clear line, never a driver traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from wis2l_core._version import package_version
from wis2l_core.cli import db, dev, events, export, health, relay, studio
from wis2l_core.errors import Wis2lError

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``wis2l`` argument parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="wis2l",
        description="wis2l-core: migrations, the embedded dev stack, events and health.",
    )
    parser.add_argument("--version", action="version", version=f"wis2l-core {package_version()}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log at DEBUG to stderr (default: errors only)"
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for area in (db, dev, events, export, health, relay, studio):
        area.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``wis2l``; return its exit code (2 for a usage or configuration error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        # Commands print their own findings; the library's warnings would repeat them.
        level=logging.DEBUG if args.verbose else logging.ERROR,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.func(args)
    except Wis2lError as exc:
        print(f"wis2l: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code
