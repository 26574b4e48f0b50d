"""``wis2l db migrate | status | new | seed | check | prune``: the database commands.

Each takes ``--database-url`` (default: ``Settings.from_env().database_url``, i.e.
``DATABASE_URL`` or the ``DATABASE_*`` variables). Problems print one line on stderr,
never a traceback; the exit codes are in :data:`EXIT_CODES` (``wis2l db --help``), and
each command's own in its ``--help``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import sys
import textwrap
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import attrs

from wis2l_core.config import Settings, parse_duration, redact_url
from wis2l_core.db.check import check_queries
from wis2l_core.db.migrate import apply_migrations, migration_status, new_migration
from wis2l_core.errors import (
    ConfigError,
    Conflict,
    MigrationError,
    ServiceUnavailable,
    ValidationError,
    Wis2lError,
)

__all__ = ["EXIT_CODES", "add_parser"]

OK, PROBLEM, USAGE, UNAVAILABLE = 0, 1, 2, 3

_PROBLEMS = {  # exit 1, by command
    "migrate": "a drifted or failed migration",
    "status": "a drifted migration; pending ones too with --fail-on-pending",
    "new": "a file that already exists",
    "seed": "an unmigrated database or a refused write",
    "check": "a query the database refused, or an unmigrated database; with --lint, a "
    "finding; with WIS2L_GENERATED, a stale generated module",
    "generate": "a query that does not prepare or type, pending migrations, or with --check "
    "a stale module",
    "prune": "an unmigrated database, a failed archive, or a partition left busy",
}
_USAGE_ERRORS = {  # exit 2, by command, besides a bad option
    "migrate": "a WIS2L_MIGRATIONS folder that is missing",
    "status": "a WIS2L_MIGRATIONS folder that is missing",
    "new": "a name that is not a slug, no folder (WIS2L_MIGRATIONS or --dir)",
    "check": "a --queries-dir or WIS2L_QUERIES folder that is missing or has no .sql file",
    "prune": "no retention or a bad --retention, an --archive folder others may write into",
}
_OFFLINE = frozenset({"new"})  # needs no database


def _exit_codes(command: str | None = None) -> str:
    """The exit codes of one command, or (``None``) of every ``db`` command."""
    url = "a malformed DATABASE_URL"
    if command is not None:
        usage = ", ".join(
            [
                "a bad option",
                *([] if command in _OFFLINE else [url]),
                *([_USAGE_ERRORS[command]] if command in _USAGE_ERRORS else []),
            ]
        )
        lines = [
            "exit codes (all commands: wis2l db --help):",
            "  0  success",
            _wrap(f"1  {_PROBLEMS[command]}"),
            _wrap(f"2  usage or configuration error: {usage}"),
        ]
        if command not in _OFFLINE:
            lines.append("  3  the database cannot be reached")
        return "\n".join(lines)
    width = max(map(len, _PROBLEMS))
    return "\n".join(
        [
            "exit codes:",
            "  0  success",
            "  1  the command found a problem:",
            *(_wrap(f"{c:<{width}}  {text}", 5, width + 2) for c, text in _PROBLEMS.items()),
            f"  2  usage or configuration error: a bad option, {url} (not for new), or:",
            *(_wrap(f"{c:<{width}}  {text}", 5, width + 2) for c, text in _USAGE_ERRORS.items()),
            "  3  the database cannot be reached (every command but new)",
        ]
    )


def _wrap(text: str, indent: int = 2, hang: int = 3) -> str:
    return textwrap.fill(
        text, width=88, initial_indent=" " * indent, subsequent_indent=" " * (indent + hang)
    )


EXIT_CODES = _exit_codes()
"""The exit codes of every ``wis2l db`` command (shown by ``wis2l db --help``)."""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``wis2l db`` and its sub-commands."""
    fmt = argparse.RawDescriptionHelpFormatter
    db = subparsers.add_parser(
        "db",
        help="migrate, inspect, seed and check the PostgreSQL database",
        description="Database commands: migrations, sample data and a check of every query.",
        epilog=EXIT_CODES,
        formatter_class=fmt,
    )
    sub = db.add_subparsers(title="commands", required=True)

    migrate = sub.add_parser(
        "migrate",
        help="apply pending migrations",
        description="Apply pending migrations in order, each in its own transaction, under "
        "an advisory lock (concurrent runs apply each file once). Stops on a drifted file.",
        epilog=_exit_codes("migrate"),
        formatter_class=fmt,
    )
    _common(migrate)
    migrate.add_argument("--migrations-dir", type=Path, help=argparse.SUPPRESS)
    migrate.set_defaults(func=_migrate)

    status = sub.add_parser(
        "status",
        help="list applied, pending and drifted migrations",
        description="List applied, pending and drifted migrations. Exits 1 on drift; "
        "pending migrations exit 0 unless --fail-on-pending is given.",
        epilog=_exit_codes("status"),
        formatter_class=fmt,
    )
    _common(status)
    status.add_argument(
        "--fail-on-pending",
        action="store_true",
        help="exit 1 when migrations are pending too (e.g. a deploy's readiness gate)",
    )
    status.add_argument("--migrations-dir", type=Path, help=argparse.SUPPRESS)
    status.set_defaults(func=_status)

    new = sub.add_parser(
        "new",
        help="write the next numbered, empty migration of the app",
        description="Write NNNN_NAME.sql (the next number in the folder, 0001 in an empty "
        "one) with a header comment into --dir, or into the app's migrations folder "
        "(WIS2L_MIGRATIONS; with several folders, --dir is required). Prints its path. "
        "Never overwrites a file. Needs no database.",
        epilog=_exit_codes("new"),
        formatter_class=fmt,
    )
    new.add_argument("name", help="a slug: lowercase letters, digits and '_' ('-' reads as '_')")
    new.add_argument(
        "--dir",
        type=Path,
        metavar="DIR",
        help="the migrations folder (created if missing; default: WIS2L_MIGRATIONS)",
    )
    new.set_defaults(func=_new)

    seed = sub.add_parser(
        "seed",
        help="load idempotent sample data",
        description="Load sample users, templates, projects, components, tokens, builds and "
        "deployments. Running it again changes nothing. The database must be migrated.",
        epilog=_exit_codes("seed"),
        formatter_class=fmt,
    )
    _common(seed)
    seed.set_defaults(func=_seed)

    check = sub.add_parser(
        "check",
        help="prepare every query of sql/queries and the app's against the database",
        description="PREPARE every named query in sql/queries and in the app's query "
        "folders (WIS2L_QUERIES) (never executed, rolled back) against a migrated database; "
        "report each failure as file:line. An unmigrated database is one error naming "
        "`wis2l db migrate`.",
        epilog=_exit_codes("check"),
        formatter_class=fmt,
    )
    _common(check)
    check.add_argument(
        "--queries-dir",
        type=Path,
        help="check the query files of this folder instead of the package's and WIS2L_QUERIES",
    )
    check.add_argument(
        "--lint",
        action="store_true",
        help="also fail on UPDATE/DELETE without WHERE, a keyset ORDER BY no index serves, "
        "and a sequential scan of a large table (from each query's generic plan)",
    )
    check.add_argument(
        "--lint-seq-scan-rows",
        type=int,
        default=10_000,
        metavar="N",
        help="with --lint: the table size (estimated rows) above which a sequential scan "
        "is reported (default: 10000)",
    )
    check.set_defaults(func=_check)

    generate = sub.add_parser(
        "generate",
        help="write typed Python modules for the app's queries (WIS2L_QUERIES)",
        description="Prepare every query of the app's query folders (WIS2L_QUERIES) on a "
        "database with every migration applied and write DIR/<file stem>.py per .sql file: "
        "frozen attrs rows and one typed async function per query. With no DATABASE_URL "
        "(and no --database-url) an embedded PostgreSQL is started and migrated for it. "
        "--check writes nothing and exits 1 naming each file that would change; a query "
        "that does not prepare prints <file>:<line> <name>: <message> and exits 1.",
        epilog=EXIT_CODES,
        formatter_class=fmt,
    )
    _common(generate)
    generate.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="the folder of the generated modules (default: WIS2L_GENERATED)",
    )
    generate.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a module would change"
    )
    generate.add_argument(
        "--line-length",
        type=int,
        default=88,
        metavar="N",
        help="format the modules for this line length, as ruff does (default: 88)",
    )
    generate.set_defaults(func=_generate)

    prune = sub.add_parser(
        "prune",
        help="drop the audit log's month partitions older than the retention",
        description="Drop the partitions of events (one per month) whose every row is older "
        "than the retention (WIS2L_EVENTS_RETENTION, or --retention), after creating the "
        "coming months' partitions. A partition that still holds an unpublished event is "
        "kept whole. Time does not depend on the partitions' size (no DELETE, no rewrite).",
        epilog=_exit_codes("prune"),
        formatter_class=fmt,
    )
    _common(prune)
    prune.add_argument(
        "--dry-run", action="store_true", help="list what would be dropped; change nothing"
    )
    prune.add_argument(
        "--archive",
        type=Path,
        metavar="DIR",
        help="first write each partition to DIR/<partition>.jsonl.gz (gzip JSON Lines, "
        "read by pandas and DuckDB), durably; a failed write drops nothing",
    )
    prune.add_argument(
        "--retention",
        metavar="DURATION",
        help="keep this long instead of WIS2L_EVENTS_RETENTION, e.g. 90d, 12h, 2w",
    )
    prune.set_defaults(func=_prune)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="PostgreSQL URL (default: DATABASE_URL or the DATABASE_* variables)",
    )


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    if args.database_url:
        try:
            settings = attrs.evolve(settings, database_url=args.database_url)
        except ConfigError as exc:
            raise ConfigError(f"--database-url: {exc}", variable="--database-url") from None
    return settings


def _error(command: str, message: str) -> None:
    """One line on stderr: driver messages can span lines (libpq adds hints)."""
    print(f"wis2l db {command}: error: {' '.join(message.split())}", file=sys.stderr)


def _run(
    command: str, action: Callable[[Settings], Coroutine[Any, Any, int]], args: argparse.Namespace
) -> int:
    """Run ``action`` and turn our errors into one line on stderr and an exit code."""
    try:
        settings = _settings(args)
        return asyncio.run(action(settings))
    except ConfigError as exc:
        code, exc_text = USAGE, str(exc)
    except ServiceUnavailable as exc:
        code, exc_text = UNAVAILABLE, str(exc)
    except Wis2lError as exc:
        code, exc_text = PROBLEM, str(exc)
    _error(command, exc_text)
    return code


def _migrate(args: argparse.Namespace) -> int:
    async def action(settings: Settings) -> int:
        try:
            applied = await apply_migrations(
                settings.direct_database_url,
                directory=args.migrations_dir,
                sources=settings.migrations,
                lock_timeout=settings.migrate_lock_timeout,
                connect_timeout=settings.db_connect_timeout,
            )
        except MigrationError as exc:
            _error("migrate", str(exc))
            return PROBLEM
        for name in applied:
            print(f"applied {name}")
        if not applied:
            print(f"nothing to apply: {redact_url(settings.direct_database_url)} is up to date")
        return OK

    return _run("migrate", action, args)


def _status(args: argparse.Namespace) -> int:
    async def action(settings: Settings) -> int:
        status = await migration_status(
            settings.direct_database_url,
            directory=args.migrations_dir,
            sources=settings.migrations,
            connect_timeout=settings.db_connect_timeout,
        )
        for label, names in (
            ("applied", status.applied),
            ("pending", status.pending),
            ("drifted", status.drifted),
        ):
            for name in names:
                print(f"{label:8} {name}")
        print(
            f"{len(status.applied)} applied, {len(status.pending)} pending, "
            f"{len(status.drifted)} drifted"
        )
        if status.drifted:
            _error(
                "status", "migrations changed after they were applied: " + ", ".join(status.drifted)
            )
            return PROBLEM
        return PROBLEM if status.pending and args.fail_on_pending else OK

    return _run("status", action, args)


def _new(args: argparse.Namespace) -> int:
    try:
        directory: Path | None = args.dir
        source = None
        if directory is None:
            configured = Settings.from_env().migrations
            if not configured:
                _error("new", "no migrations folder: set WIS2L_MIGRATIONS or pass --dir")
                return USAGE
            if len(configured) > 1:
                names = ", ".join(f"{s.name}={s.path}" for s in configured)
                _error("new", f"WIS2L_MIGRATIONS names several folders ({names}): pass --dir")
                return USAGE
            directory, source = configured[0].path, configured[0].name
        path = new_migration(directory, args.name, source=source)
    except (ConfigError, ValidationError) as exc:
        _error("new", str(exc))
        return USAGE
    except Conflict as exc:
        _error("new", str(exc))
        return PROBLEM
    except OSError as exc:  # a --dir that cannot be created or written
        _error("new", f"{exc.strerror}: {exc.filename}")
        return USAGE
    print(path)
    return OK


def _seed(args: argparse.Namespace) -> int:
    async def action(settings: Settings) -> int:
        from wis2l_core.dev.seed import seed_database

        status = await migration_status(
            settings.database_url, connect_timeout=settings.db_connect_timeout
        )
        if status.pending or status.drifted:
            _error(
                "seed",
                f"the database is not migrated ({len(status.pending)} pending, "
                f"{len(status.drifted)} drifted): run `wis2l db migrate` first",
            )
            return PROBLEM
        report = await seed_database(settings)
        for line in report.lines():
            print(line)
        return OK

    return _run("seed", action, args)


def _check(args: argparse.Namespace) -> int:
    async def action(settings: Settings) -> int:
        try:
            flag = "--queries-dir" if args.queries_dir else "WIS2L_QUERIES"
            report = await check_queries(
                settings.direct_database_url,  # it prepares every query: the server itself
                directory=args.queries_dir,
                app_directories=() if args.queries_dir else settings.queries,
                connect_timeout=settings.db_connect_timeout,
                lint=args.lint,
                seq_scan_rows=args.lint_seq_scan_rows,
            )
        except ValidationError as exc:  # a folder is missing or has no .sql file
            _error("check", f"{flag} {exc}")
            return USAGE
        for failure in report.failures:
            print(failure)
        print(
            f"checked {report.checked} queries in {report.files} files: "
            f"{len(report.failures)} failed"
        )
        if report.ok and settings.generated is not None and not args.queries_dir:
            return await _check_generated(settings, settings.generated)
        return OK if report.ok else PROBLEM

    return _run("check", action, args)


def _generate(args: argparse.Namespace) -> int:
    from wis2l_core.db.generate import GenerateError, generate

    async def action(settings: Settings) -> int:
        out = args.out or settings.generated
        if out is None:
            raise ConfigError(
                "no output folder: pass --out or set WIS2L_GENERATED", variable="WIS2L_GENERATED"
            )
        given = args.database_url or any(
            os.environ.get(name)
            for name in ("DATABASE_URL", "DATABASE_HOST", "DATABASE_DIRECT_URL")
        )
        try:
            count, changed = await generate(
                settings,
                out,
                check=args.check,
                embedded=not given,
                line_length=args.line_length,
            )
        except ValidationError as exc:
            _error("generate", str(exc))
            return USAGE
        except GenerateError as exc:
            for line in exc.lines:
                print(line, file=sys.stderr)
            return PROBLEM
        for path in changed:
            print(f"{'stale' if args.check else 'wrote'} {path}")
        verb = "stale" if args.check else "written"
        print(f"typed {count} queries: {len(changed)} module(s) {verb}")
        return PROBLEM if args.check and changed else OK

    return _run("generate", action, args)


async def _check_generated(settings: Settings, out: Path) -> int:
    """``wis2l db check`` with ``WIS2L_GENERATED``: the typed modules must be current."""
    from wis2l_core.db.generate import GenerateError, generate, line_length_of

    try:
        _, stale = await generate(settings, out, check=True, line_length=line_length_of(out))
    except GenerateError as exc:
        for line in exc.lines:
            print(line)
        return PROBLEM
    for path in stale:
        print(f"stale {path}: run `wis2l db generate`")
    return PROBLEM if stale else OK


def _prune(args: argparse.Namespace) -> int:
    from wis2l_core.db.retention import prune_events

    async def action(settings: Settings) -> int:
        retention = settings.events_retention
        if args.retention is not None:
            try:
                retention = parse_duration(args.retention)
            except ValueError:
                raise ConfigError(
                    f"--retention: {args.retention!r} is not a duration such as 90d, 12h or 2w",
                    variable="--retention",
                ) from None
        if retention is None:
            raise ConfigError(
                "no retention: set WIS2L_EVENTS_RETENTION (e.g. 90d) or pass --retention; "
                "nothing was pruned",
                variable="WIS2L_EVENTS_RETENTION",
            )
        try:
            report = await prune_events(
                settings.direct_database_url,
                retention=retention,
                dry_run=args.dry_run,
                archive_dir=args.archive,
                connect_timeout=settings.db_connect_timeout,
            )
        except ValidationError as exc:  # an unsafe --archive folder: refused, nothing pruned
            _error("prune", f"--archive: {exc}")
            return USAGE
        except OSError as exc:
            _error("prune", f"archive: {exc.strerror or exc}: {exc.filename or args.archive}")
            return PROBLEM
        for name in report.created:
            print(f"{'created':<24} {name}")
        for part in report.partitions:
            rows = f"{part.rows} rows" if part.exact or part.rows >= 0 else "? rows"
            if not part.exact and part.rows >= 0:
                rows = f"about {rows}"
            since = part.lower.isoformat() if part.lower else "the beginning"
            line = (
                f"{part.action:<24} {part.name}  {since} .. {part.upper.isoformat()}  "
                f"{rows}, {part.bytes / 1e6:.1f} MB"
            )
            if part.archive is not None:
                line += f"  -> {part.archive}"
            print(line)
        verb = "would remove" if report.dry_run else "removed"
        print(
            f"{verb} {len(report.removed)} partition(s) ending at or before "
            f"{report.cutoff.isoformat()} ({_duration(retention)} ago)"
        )
        if not report.ok:
            _error("prune", "a partition's lock was busy: run `wis2l db prune` again")
            return PROBLEM
        return OK

    return _run("prune", action, args)


def _duration(value: datetime.timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
