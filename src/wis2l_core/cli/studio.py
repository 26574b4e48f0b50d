"""``wis2l studio``: the data browser (the ``studio`` extra)."""

from __future__ import annotations

import argparse

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the `studio` command."""
    parser = subparsers.add_parser(
        "studio", help="browse and edit the data in a local web UI (the studio extra)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Not built yet."""
    raise NotImplementedError
