"""``wis2l studio``: the data browser (the ``studio`` extra).

Serves a local web UI on 127.0.0.1 (``--host``/``--port``) over the database named by
the environment, and opens the browser (``--no-browser`` to skip). Read-only unless
``--write``, which edits through the repositories. It answers only to the names of the
bound address (see ``studio.hosts``). A non-loopback ``--host`` needs the auth extra and an
issuer (admin role required); without them the command refuses to start.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import webbrowser

import attrs

from wis2l_core.config import Settings

__all__ = ["add_parser"]

OK, UNAVAILABLE = 0, 3


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the `studio` command."""
    parser = subparsers.add_parser(
        "studio",
        help="browse and edit the data in a local web UI (the studio extra)",
        description="Serve the studio: every table with keyset pages, filters and sorting, "
        "rows with their relations, a live panel of events, health and the outbox backlog. "
        "DATABASE_URL, REDIS_URL, NATS_URL and WIS2L_NAMESPACE apply.",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1); requests must name it, or 127.0.0.1, "
        "localhost or [::1], in Host",
    )
    parser.add_argument("--port", type=int, default=5555, help="port (default 5555; 0: any)")
    parser.add_argument(
        "--write",
        action="store_true",
        help="allow create, update and delete (through the repositories)",
    )
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C; exit 3 if the port cannot be bound."""
    try:
        import jinja2  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        print(
            f"wis2l: the studio needs its extra ({exc.name} is missing): "
            "pip install 'wis2l-core[studio]'",
            file=sys.stderr,
        )
        return 2
    return asyncio.run(_serve(args))


async def _serve(args: argparse.Namespace) -> int:
    from wis2l_core.runtime import Wis2l
    from wis2l_core.studio.server import StudioServer

    # A person waits for the pages: with the database out of reach they say so at once.
    settings = attrs.evolve(Settings.from_env(), db_fail_fast=True)
    async with Wis2l(settings) as wis:
        server = StudioServer(wis, host=args.host, port=args.port, write=args.write)
        try:
            url = await server.start()
        except OSError as exc:
            print(
                f"wis2l: cannot serve the studio on {args.host}:{args.port}: {exc}", file=sys.stderr
            )
            return UNAVAILABLE
        mode = "read-write" if args.write else "read-only"
        print(f"wis2l studio ({mode}) on {url}  (Ctrl-C to stop)", flush=True)
        if wis.database.down:  # one line per outage: the pages say it too, at once
            print(
                "wis2l studio: the database is unreachable; pages answer 503 until it is "
                "back (it reconnects by itself)",
                file=sys.stderr,
            )
        if not args.no_browser:
            await asyncio.to_thread(webbrowser.open, url)
        try:
            await server.wait()
        finally:
            await server.stop()
    return OK
