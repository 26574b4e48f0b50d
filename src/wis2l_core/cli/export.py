"""``wis2l export QUERY --parquet FILE``: a named query's rows into a Parquet file.

``QUERY`` is ``<file>.<name>``: a query of the app's query folders (``WIS2L_QUERIES``,
looked at first) or of the library's (``builds.find_all``). Values for its placeholders
come as ``-p name=value`` (text, which PostgreSQL converts to the placeholder's type). The
rows are read through binary ``COPY`` and written a batch at a time, so memory stays
bounded whatever the size; the file appears only once it is complete. On a terminal a
progress line runs on stderr.

Exit codes: 0 written, 1 the query failed or a column cannot be exported, 2 a usage
problem (unknown query, a malformed ``-p``, the ``arrow`` extra missing), 3 the database
cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import attrs

from wis2l_core.config import Settings
from wis2l_core.db.pool import Database
from wis2l_core.db.sql import Query, load_queries, query_file, sql_root
from wis2l_core.errors import ConfigError, ServiceUnavailable, Wis2lError

__all__ = ["add_parser", "find_query", "parse_params"]

OK, PROBLEM, USAGE, UNAVAILABLE = 0, 1, 2, 3


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the `export` command."""
    parser = subparsers.add_parser(
        "export",
        help="write a named query's rows to a Parquet file (the arrow extra)",
        description="Run a named query (<file>.<name>, from WIS2L_QUERIES or the library's "
        "sql/queries) through binary COPY and write its rows to a Parquet file, a batch at "
        "a time. Exit status: 0 written, 1 the query failed, 2 a usage problem, 3 the "
        "database cannot be reached.",
    )
    parser.add_argument("query", metavar="QUERY", help="<file>.<name>, e.g. builds.find_all")
    parser.add_argument(
        "--parquet", required=True, metavar="FILE", type=Path, help="the Parquet file to write"
    )
    parser.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a value for the query's %%(NAME)s placeholder (repeat for each)",
    )
    parser.add_argument(
        "--database-url", metavar="URL", help="default: DATABASE_URL (or the DATABASE_* variables)"
    )
    parser.add_argument(
        "--compression",
        default="zstd",
        choices=("zstd", "snappy", "gzip", "none"),
        help="Parquet compression (default: zstd)",
    )
    parser.set_defaults(func=run)


def parse_params(pairs: Sequence[str]) -> dict[str, str]:
    """``["day=2024-05-01", ...]`` -> ``{"day": "2024-05-01"}``.

    Raises:
        ConfigError: a pair without ``=`` or with an empty name, or a name given twice.
    """
    params: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(f"-p {pair!r}: expected NAME=VALUE", variable="param")
        if name in params:
            raise ConfigError(f"-p {name}: given twice", variable="param")
        params[name] = value
    return params


def find_query(name: str, folders: Sequence[Path]) -> Query:
    """The query ``<file>.<name>``: from the app's ``folders`` first, then the library's.

    Raises:
        ConfigError: not of the form ``file.name``, or no such file or query.
    """
    stem, dot, query = name.rpartition(".")
    if not dot or not stem or not query:
        raise ConfigError(f"{name!r}: expected <file>.<name>, e.g. builds.find_all")
    for folder in folders:
        path = folder / f"{stem}.sql"
        if path.is_file():
            found = load_queries(path)
            if query in found:
                return found[query]
            raise ConfigError(f"{path} has no query {query!r}")
    if (sql_root() / "queries" / f"{stem}.sql").is_file():
        library = query_file(stem)
        if query in library:
            return library[query]
        raise ConfigError(f"the library's {stem}.sql has no query {query!r}")
    where = ", ".join(str(f) for f in folders) or "no WIS2L_QUERIES folder"
    raise ConfigError(f"no query file {stem}.sql (looked in {where} and the library's)")


class _Progress:
    """A one-line progress report on a terminal (rows, size, rate); silent elsewhere."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.start = time.monotonic()
        self.rows = 0
        self.bytes = 0

    def add(self, rows: int, size: int) -> None:
        self.rows += rows
        self.bytes += size
        if self.live:
            elapsed = max(time.monotonic() - self.start, 1e-9)
            self.stream.write(
                f"\r  {self.rows:>12,} rows  {self.bytes / 1e6:>9.1f} MB"
                f"  {self.rows / elapsed:>10,.0f} rows/s"
            )
            self.stream.flush()

    def end(self) -> None:
        if self.live:
            self.stream.write("\n")
            self.stream.flush()


async def export(
    settings: Settings,
    query: Query,
    params: dict[str, Any],
    target: Path,
    *,
    compression: str | None = "zstd",
    progress: TextIO | None = None,
) -> int:
    """Write ``query``'s rows to the Parquet file ``target``; return the row count.

    The rows go to a temporary file beside ``target``, renamed over it once complete.

    Raises:
        ConfigError: the ``arrow`` extra is not installed.
        Wis2lError: the query failed (as :meth:`~wis2l_core.db.queries.QueryMethods.to_arrow`).
    """
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ConfigError(
            f"wis2l export needs the arrow extra: pip install 'wis2l-core[arrow]' ({exc})"
        ) from exc
    meter = _Progress(progress or sys.stderr)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    db = Database(settings)
    await db.open()
    try:
        writer = None
        try:
            async with contextlib.aclosing(db.arrow_batches(query, params)) as batches:
                async for batch in batches:
                    if writer is None:
                        writer = pq.ParquetWriter(partial, batch.schema, compression=compression)
                    writer.write_batch(batch)
                    meter.add(batch.num_rows, batch.nbytes)
        finally:
            if writer is not None:
                writer.close()
            meter.end()
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
        await db.close()
    return meter.rows


def _line(exc: BaseException) -> str:
    """The first line of the error (PostgreSQL adds CONTEXT and DETAIL lines)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def run(args: argparse.Namespace) -> int:
    """Export; print ``wrote N rows to FILE`` or one line on stderr; return the exit code."""
    try:
        settings = Settings.from_env()
        if args.database_url:
            settings = attrs.evolve(settings, database_url=args.database_url)
        query = find_query(args.query, settings.queries)
        params = parse_params(args.param)
        compression = None if args.compression == "none" else args.compression
        rows = asyncio.run(export(settings, query, params, args.parquet, compression=compression))
    except ConfigError as exc:
        print(f"wis2l export: {_line(exc)}", file=sys.stderr)
        return USAGE
    except ServiceUnavailable as exc:
        print(f"wis2l export: {_line(exc)}", file=sys.stderr)
        return UNAVAILABLE
    except (Wis2lError, OSError) as exc:
        print(f"wis2l export: {type(exc).__name__}: {_line(exc)}", file=sys.stderr)
        return PROBLEM
    print(f"wrote {rows:,} rows to {args.parquet}")
    return OK
