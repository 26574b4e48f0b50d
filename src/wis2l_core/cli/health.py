"""`wis2l health [--json] [--timeout S]`: check the servers the environment names.

Exit status 0 when ok, 1 when degraded, 2 when unhealthy (or the settings are malformed).
Each server is checked with a connection of its own, opened and closed within the check's
timeout, so a server that is down or hung yields a row in the table, never a traceback,
and the command never takes much longer than the timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping
from typing import Any

import attrs
import orjson
from nats.aio.client import Client as NatsClient
from nats.errors import NoServersError

from wis2l_core._net import whole_seconds
from wis2l_core.cache.client import RedisClient
from wis2l_core.config import Settings
from wis2l_core.db.connect import connect_to
from wis2l_core.db.migrate import check_schema
from wis2l_core.errors import ConfigError, ServiceUnavailable
from wis2l_core.events._errors import NATS_ERRORS, translate
from wis2l_core.health import (
    HealthChecker,
    HealthReport,
    HealthStatus,
    ping_check,
    secrets_of,
    stream_check,
)

__all__ = ["EXIT_CODES", "add_parser", "collect", "format_table", "run"]

EXIT_CODES: Mapping[HealthStatus, int] = {
    HealthStatus.OK: 0,
    HealthStatus.DEGRADED: 1,
    HealthStatus.UNHEALTHY: 2,
}
"""The exit status for each verdict."""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the `health` command."""
    parser = subparsers.add_parser(
        "health",
        help="check PostgreSQL, Redis and NATS (exit 0 ok, 1 degraded, 2 unhealthy)",
        description="Check the servers named by the environment (DATABASE_URL, REDIS_URL, "
        "NATS_URL, ...). Exit status: 0 ok, 1 degraded, 2 unhealthy.",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="S",
        help="seconds each check may take (default: WIS2L_HEALTH_TIMEOUT, else 2)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the checks, print the table (or JSON) and return the exit status."""
    try:
        settings = Settings.from_env()
        if args.timeout is not None:
            if not args.timeout > 0:
                raise ConfigError("--timeout must be a number of seconds > 0", variable="timeout")
            settings = attrs.evolve(settings, health_timeout=args.timeout)
    except ConfigError as exc:
        print(f"wis2l health: {exc}", file=sys.stderr)
        return 2
    report = asyncio.run(collect(settings))
    if args.json:
        print(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(format_table(report))
    return EXIT_CODES[report.status]


async def collect(settings: Settings) -> HealthReport:
    """Check the database (reachable and migrated), Redis (``PING``) and NATS (JetStream account).

    ``settings.critical_services`` and ``settings.health_timeout`` apply as in
    ``wis.health()``.
    """
    critical = settings.critical_services
    checker = HealthChecker(timeout=settings.health_timeout, secrets=secrets_of(settings))
    checker.add("database", lambda: _database(settings), critical="database" in critical)
    checker.add("redis", lambda: _redis(settings), critical="redis" in critical)
    checker.add("nats", lambda: _nats(settings), critical="nats" in critical)
    return await checker.run()


async def _database(settings: Settings) -> Mapping[str, Any]:
    async with await connect_to(settings) as conn:
        version = await check_schema(conn)
    return {"server_version": version}


async def _redis(settings: Settings) -> Mapping[str, Any] | None:
    client = RedisClient(settings, retries=0)
    await client.open()
    try:
        return await ping_check(client)
    finally:
        await client.aclose()


async def _nats(settings: Settings) -> Mapping[str, Any]:
    nc = NatsClient()
    seen: list[Exception] = []

    async def record(exc: Exception) -> None:  # the check reports errors: nothing to log
        seen.append(exc)

    try:
        await nc.connect(
            servers=list(settings.nats_urls),
            connect_timeout=whole_seconds(settings.nats_connect_timeout),
            allow_reconnect=False,
            # Try each server twice without pause, then give up (0 would mean forever).
            max_reconnect_attempts=1,
            reconnect_time_wait=0,
            error_cb=record,
            name="wis2l-health",
        )
        return await stream_check(nc.jetstream(), settings.stream_name)
    except ServiceUnavailable:  # the check's own verdict (a missing stream)
        raise
    except NATS_ERRORS as exc:
        cause = seen[-1] if isinstance(exc, NoServersError) and seen else exc
        raise translate(cause) from exc
    finally:
        # Also after a cancelled connect, which leaves the socket open otherwise.
        if not nc.is_closed:
            await nc.close()


def format_table(report: HealthReport) -> str:
    """The human form: one row per check, then the verdict."""
    rows = [("check", "status", "critical", "latency ms", "error")]
    for name, result in report.checks.items():
        rows.append(
            (
                name,
                "ok" if result.healthy else "FAILED",
                "yes" if result.critical else "no",
                f"{result.latency_ms:.1f}",
                result.error or "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for row in rows:
        cells = [
            row[0].ljust(widths[0]),
            row[1].ljust(widths[1]),
            row[2].ljust(widths[2]),
            row[3].rjust(widths[3]),
            row[4],
        ]
        lines.append("  ".join(cells).rstrip())
    lines.append(f"\nstatus: {report.status.value} (wis2l-core {report.version})")
    return "\n".join(lines)
