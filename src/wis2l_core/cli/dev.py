"""``wis2l dev``: run the embedded stack, migrate it, and print the environment to reach it.

The database is migrated before anything is printed (``--no-migrate`` leaves it bare), so the
exports point at a schema an app can use at once. Stdout carries only ``export NAME=value``
lines, so ``wis2l dev > .env.dev`` (or reading the first three lines from a script) works;
the human messages (what was migrated, "ready") go to stderr. The three server lines come
first; with the ``auth`` extra the ``WIS2L_OIDC_*`` lines of the local issuer follow.

``wis2l dev token --sub ... [--email --name --role --ttl] [--data-dir]`` prints a token
signed by the running issuer's key: ``wis2l dev`` keeps the issuer's URL and keys in
``oidc-issuer.json`` (mode 0600) in its data directory, or in a per-user directory under
the system's temporary directory when it runs without one. Either directory is made
0700 and refused, as ssh refuses ``~/.ssh``, when it belongs to another user or others
may write into it: a folder someone else made would hand their key and tokens to us.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import signal
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType

from wis2l_core._secrets import scrub, secrets_in
from wis2l_core.db.migrate import apply_migrations
from wis2l_core.dev import EmbeddedStack
from wis2l_core.dev._binaries import _private_dir
from wis2l_core.errors import StartupError, Wis2lError

__all__ = ["add_parser", "default_state_dir", "run", "run_token"]

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``dev`` subcommand.

    Args:
        subparsers: what ``ArgumentParser.add_subparsers()`` returned.
    """
    parser = subparsers.add_parser(
        "dev",
        help="run embedded PostgreSQL, Valkey and NATS until Ctrl-C",
        description=(
            "Start PostgreSQL, a Redis-compatible server (Valkey) and NATS with JetStream on "
            "free loopback ports, apply the migrations, print the export lines that point "
            "wis2l at them, and run until Ctrl-C or SIGTERM."
        ),
    )
    parser.add_argument(
        "--no-migrate",
        dest="migrate",
        action="store_false",
        help="leave the database bare (default: apply the pending migrations at start)",
    )
    parser.add_argument(
        "--data-dir",
        metavar="PATH",
        default=None,
        help="keep the data in PATH between runs (default: a temporary directory)",
    )
    parser.set_defaults(func=run)
    commands = parser.add_subparsers(dest="dev_command", metavar="{token}")
    token = commands.add_parser(
        "token",
        help="print a token signed by the running dev issuer",
        description=(
            "Print a JWT for SUB signed by the dev OIDC issuer that `wis2l dev` runs "
            "(its keys are read from the data directory)."
        ),
    )
    token.add_argument("--sub", required=True, help="the subject (the user's stable id)")
    token.add_argument("--email", default=None, help="the email claim (with email_verified: true)")
    token.add_argument("--name", default=None, help="the name claim")
    token.add_argument(
        "--role",
        choices=("viewer", "developer", "admin"),
        default=None,
        help="the role claim (honoured when WIS2L_OIDC_ROLE_CLAIM is set, as `wis2l dev` does)",
    )
    token.add_argument("--ttl", type=float, default=3600.0, help="seconds it is valid (3600)")
    token.add_argument(
        "--data-dir",
        metavar="PATH",
        default=None,
        help="the data directory `wis2l dev` was given (default: its per-user one)",
    )
    token.set_defaults(func=run_token)


_ANOTHER_STATE_DIR = "pass --data-dir (or set TMPDIR) to use another directory"


def default_state_dir() -> Path:
    """Where ``wis2l dev`` without ``--data-dir`` keeps the dev issuer's URL and keys."""
    return Path(tempfile.gettempdir()) / f"wis2l-dev-{os.getuid()}"


def run_token(args: argparse.Namespace) -> int:
    """Print a token from the dev issuer's persisted keys.

    Returns:
        0, or 1 when no dev issuer state is found, or its directory is not safe (another
        user's, or writable by others).
    """
    try:
        from wis2l_core.dev.issuer import DevIssuer
    except ImportError:
        print(
            "wis2l dev token: needs the auth extra: pip install 'wis2l-core[auth]'", file=sys.stderr
        )
        return 1
    where = Path(args.data_dir).expanduser() if args.data_dir else default_state_dir()
    try:
        if args.data_dir:
            _private_dir(where, "data directory", create=False)
        else:
            _private_dir(where, "state directory", create=False, hint=_ANOTHER_STATE_DIR)
        issuer = DevIssuer.from_state(where)
    except (FileNotFoundError, PermissionError) as exc:
        print(f"wis2l dev token: {exc}", file=sys.stderr)
        return 1
    print(issuer.mint(sub=args.sub, email=args.email, name=args.name, role=args.role, ttl=args.ttl))
    return 0


def run(args: argparse.Namespace) -> int:
    """Start the stack, migrate, print the exports, block until SIGINT/SIGTERM/SIGHUP, stop.

    Args:
        args: parsed arguments; ``args.data_dir`` may be ``None``, ``args.migrate`` is
            false with ``--no-migrate``.

    Returns:
        0 after a clean stop, 1 when the stack could not start or the migrations failed,
        130 when interrupted during start.
    """
    if not args.data_dir:  # the stack checks it too; here the advice names the options
        try:
            _private_dir(default_state_dir(), "state directory", hint=_ANOTHER_STATE_DIR)
        except OSError as exc:
            print(f"wis2l dev: {exc}", file=sys.stderr)
            return 1
    stack = EmbeddedStack(
        args.data_dir, oidc_state_dir=None if args.data_dir else default_state_dir()
    )
    stop = threading.Event()
    # A signal inherited as ignored (nohup, a script's background job) stays ignored.
    previous = {
        sig: handler
        for sig in _STOP_SIGNALS
        if (handler := signal.getsignal(sig)) is not signal.SIG_IGN
    }
    try:
        # Until the stack is up and migrated, a stop signal interrupts start(), which cleans up.
        for sig in previous:
            signal.signal(sig, signal.default_int_handler)
        try:
            stack.start()
            if not _migrate(stack.database_url, migrate=getattr(args, "migrate", True)):
                return 1
        except StartupError as exc:
            print(f"wis2l dev: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130

        def request_stop(signum: int, frame: FrameType | None) -> None:
            stop.set()

        for sig in previous:
            signal.signal(sig, request_stop)
        for name, value in (stack.environ() | stack.oidc_environ()).items():
            print(f"export {name}={shlex.quote(value)}")
        sys.stdout.flush()
        data = stack.data_dir
        where = f" (data in {_shown(data)})" if args.data_dir and data is not None else ""
        print(
            f"embedded stack ready in {stack.startup_seconds:.1f} s{where}; Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )
        while not stop.wait(0.5):
            pass
        print("stopping the embedded stack", file=sys.stderr, flush=True)
        return 0
    finally:
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _migrate(database_url: str, *, migrate: bool) -> bool:
    """Apply the pending migrations to ``database_url`` (unless told not to); say so on stderr.

    Returns:
        False when the migrations failed (the message is printed).

    Raises:
        KeyboardInterrupt: a stop signal came while migrating.
    """
    if not migrate:
        print(
            "not migrated (--no-migrate): `wis2l db migrate` creates the schema",
            file=sys.stderr,
        )
        return True
    try:
        applied = asyncio.run(apply_migrations(database_url))
    except Wis2lError as exc:
        message = " ".join(scrub(str(exc), secrets_in([database_url])).split())
        print(f"wis2l dev: the migrations failed: {message}", file=sys.stderr)
        return False
    if applied:
        print(f"applied {len(applied)} migration(s): {', '.join(applied)}", file=sys.stderr)
    else:
        print("schema up to date: no migration to apply", file=sys.stderr)
    return True


def _shown(path: Path) -> str:
    """``path`` as a person would type it: under the home folder, ``~/...``."""
    home = Path.home()
    return f"~/{path.relative_to(home)}" if path.is_relative_to(home) else str(path)
