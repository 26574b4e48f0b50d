"""``wis2l db check``: prepare every named query against a migrated database.

Each query of ``sql/queries/*.sql`` is sent as ``PREPARE`` (parsed, analysed and planned
by the server, never executed) inside one transaction that is rolled back at the end, so
a typo, a renamed column or a missing ``::type`` cast fails CI instead of production.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import psycopg
from psycopg.rows import tuple_row

from wis2l_core.db.connect import connect
from wis2l_core.db.errors import SchemaMissing, map_errors
from wis2l_core.db.sql import Query, parse_queries, sql_root
from wis2l_core.errors import ValidationError

__all__ = ["CheckReport", "QueryFailure", "check_queries"]

# A placeholder not followed by a cast: the server would have to guess its type.
_UNCAST = re.compile(r"%\(([a-z_][a-z0-9_]*)\)s(?!::)")
_COMMENT = re.compile(r"--[^\n]*")
PREPARE = "PREPARE wis2l_check_0 AS "
"""How a query is prepared (also by ``wis2l db generate``): error positions count from it."""


@attrs.frozen
class QueryFailure:
    """A query the server refused (or a file that did not parse).

    Attributes:
        file: the file's name, e.g. ``"builds.sql"``.
        line: the line of the error when the server points at one, else of ``-- name:``.
        query: the query's name (``None`` when the file itself did not parse).
        message: the server's (or the parser's) message.
        folder: the folder shown before the file: ``sql/queries`` for the library's (and
            ``--queries-dir``), the configured path for an app folder (``WIS2L_QUERIES``).
    """

    file: str
    line: int
    query: str | None
    message: str
    folder: str = "sql/queries"

    def __str__(self) -> str:
        name = f" {self.query}:" if self.query else ""
        return f"{self.folder}/{self.file}:{self.line}:{name} {self.message}"


@attrs.frozen
class CheckReport:
    """What :func:`check_queries` found.

    Attributes:
        checked: how many queries were prepared.
        files: how many query files were read.
        failures: one entry per refused query, in file order.
    """

    checked: int
    files: int
    failures: tuple[QueryFailure, ...]

    @property
    def ok(self) -> bool:
        """Every query prepared."""
        return not self.failures


def _body_start(lines: list[str], query: Query) -> int:
    """The file line (1-based) where the query's text begins, after its ``-- name:``."""
    line = query.line + 1
    while line <= len(lines) and not lines[line - 1].strip():
        line += 1
    return line


def error_line(
    lines: list[str], query: Query, sql: str, exc: psycopg.Error, prefix: str = PREPARE
) -> int:
    """The file line of the server's error position in ``prefix + sql``, else ``-- name:``'s."""
    position = exc.diag.statement_position
    if not position or not position.isdigit():
        return query.line
    # PREPARE <name> AS <sql>: the server counts from the start of the whole statement.
    offset = int(position) - 1 - len(prefix)
    return _body_start(lines, query) + sql.count("\n", 0, max(0, offset))


async def check_queries(
    database_url: str,
    *,
    directory: Path | None = None,
    app_directories: Sequence[Path] = (),
    connect_timeout: float = 5.0,
    lint: bool = False,
    seq_scan_rows: int = 10_000,
) -> CheckReport:
    """Prepare every query of every ``*.sql`` file in ``directory``; report the failures.

    Args:
        database_url: a migrated database.
        directory: the query files (default: the package's ``sql/queries``).
        app_directories: the app's own query folders (``Settings.queries``), checked
            after ``directory``; their failures show the folder's path.
        connect_timeout: seconds to connect.
        lint: also report, as failures whose message starts with ``lint:``, an
            ``UPDATE``/``DELETE`` without ``WHERE``, a keyset query (``%(after)s`` with
            ``ORDER BY``) whose order no index serves, and a sequential scan of a table
            PostgreSQL estimates above ``seq_scan_rows`` rows, from each query's generic
            plan (``EXPLAIN``, never executed).
        seq_scan_rows: the table size (``pg_class.reltuples``) above which a sequential
            scan is reported.

    Raises:
        SchemaMissing: the database was never migrated (one error, not one per query).
        ValidationError: a folder is missing or holds no ``.sql`` file.
        ServiceUnavailable: the database cannot be reached.
    """
    sources = [
        ("sql/queries", file, text)
        for file, text in _read(directory if directory is not None else sql_root() / "queries")
    ]
    for app_folder in app_directories:
        sources.extend((str(app_folder), file, text) for file, text in _read(app_folder))
    failures: list[QueryFailure] = []
    checked = 0
    conn = await connect(
        database_url,
        application_name="wis2l-core check",
        timeout=connect_timeout,
        autocommit=False,
        row_factory=tuple_row,
    )
    async with conn:
        with map_errors():
            await _require_schema(conn)
            # One transaction, always rolled back; each query gets a savepoint so that one
            # failure does not abort the rest.
            async with conn.transaction(force_rollback=True):
                linter = None
                if lint:
                    await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                    linter = _Linter(seq_scan_rows)
                for shown, file, text in sources:
                    found: list[QueryFailure] = []
                    checked += await _check_file(conn, file, text, found, linter)
                    failures.extend(attrs.evolve(f, folder=shown) for f in found)
    return CheckReport(checked=checked, files=len(sources), failures=tuple(failures))


async def _require_schema(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
    """Refuse an unmigrated database at once, rather than one failure per query."""
    cur = await conn.execute("SELECT to_regclass('wis2l_migrations') IS NOT NULL")
    row = await cur.fetchone()
    if row is None or not row[0]:
        raise SchemaMissing(
            "the database schema is missing (no migration has been applied):"
            " run `wis2l db migrate` first"
        )


def _read(root: Path) -> list[tuple[str, str]]:
    """(file name, text) of each query file, sorted (read before any I/O wait).

    Raises:
        ValidationError: ``root`` is not a folder, or holds no ``.sql`` file (checking
            nothing must not pass).
    """
    if not root.is_dir():
        raise ValidationError(f"{root}: no such folder of query files", field="directory")
    paths = sorted(root.glob("*.sql"))
    if not paths:
        raise ValidationError(f"{root}: no .sql files to check", field="directory")
    return [(p.name, p.read_text(encoding="utf-8")) for p in paths]


async def _check_file(
    conn: psycopg.AsyncConnection[tuple[object, ...]],
    file: str,
    text: str,
    failures: list[QueryFailure],
    linter: _Linter | None = None,
) -> int:
    lines = text.splitlines()
    try:
        queries = parse_queries(file.removesuffix(".sql"), text)
    except ValueError as exc:
        line = re.search(r"\.sql:(\d+):", str(exc))
        message = str(exc).split(": ", 1)[-1]
        failures.append(QueryFailure(file, int(line.group(1)) if line else 1, None, message))
        return 0
    checked = 0
    for query in queries:
        checked += 1
        failures.extend(await _check_one(conn, lines, query, file, linter))
    return checked


async def _check_one(
    conn: psycopg.AsyncConnection[tuple[object, ...]],
    lines: list[str],
    query: Query,
    file: str,
    linter: _Linter | None = None,
) -> list[QueryFailure]:
    found = [
        QueryFailure(file, query.line, query.name, f"parameter %({name})s has no ::type cast")
        for name in dict.fromkeys(_UNCAST.findall(_COMMENT.sub("", query.text)))
    ]
    sql = query.positional()
    try:
        async with conn.transaction():  # a savepoint: one failure does not end the check
            await conn.execute(PREPARE + sql)
            if linter is not None:
                found.extend(
                    QueryFailure(file, query.line, query.name, f"lint: {problem}")
                    for problem in await linter.lint(conn, query)
                )
            await conn.execute("DEALLOCATE wis2l_check_0")
    except psycopg.OperationalError:
        raise
    except psycopg.Error as exc:
        message = exc.diag.message_primary or str(exc)
        found.append(QueryFailure(file, error_line(lines, query, sql, exc), query.name, message))
    return found


_WRITE = re.compile(r"^\s*(?:WITH\b.*?\)\s*)?(UPDATE|DELETE)\b", re.IGNORECASE | re.DOTALL)
_KEYSET = re.compile(r"%\(after\)s.*\bORDER\s+BY\b", re.IGNORECASE | re.DOTALL)


@attrs.define
class _Linter:
    """``wis2l db check --lint``: what a query's text and generic plan say about it."""

    seq_scan_rows: int
    _sizes: dict[str, float] = attrs.Factory(dict)

    async def lint(
        self, conn: psycopg.AsyncConnection[tuple[object, ...]], query: Query
    ) -> list[str]:
        """The problems of ``query``, prepared as ``wis2l_check_0`` on ``conn``."""
        text = _COMMENT.sub("", query.text)
        problems = []
        write = _WRITE.match(text)
        if write and not re.search(r"\bWHERE\b", text[write.start(1) :], re.IGNORECASE):
            problems.append(f"{write.group(1).upper()} without WHERE touches every row")
        args = f"({', '.join(['NULL'] * len(query.params))})" if query.params else ""
        explain = f"EXPLAIN (VERBOSE, FORMAT JSON) EXECUTE wis2l_check_0{args}"
        nodes = _nodes(await _plan(conn, explain))
        for node in nodes:
            if node.get("Node Type") != "Seq Scan":
                continue
            table = f"{node.get('Schema', 'public')}.{node['Relation Name']}"
            rows = await self._size(conn, table)
            if rows > self.seq_scan_rows:
                problems.append(
                    f"sequential scan of {table} (about {rows:.0f} rows, above"
                    f" {self.seq_scan_rows}): no index serves the query"
                )
        if _KEYSET.search(text):
            # Would the planner sort even when sorting and scanning are all but forbidden?
            # Then no index can give the ORDER BY.
            switches = ("enable_sort", "enable_seqscan", "enable_bitmapscan")
            try:
                for setting in switches:
                    await conn.execute(f"SET LOCAL {setting} = off")
                # A statement of its own: wis2l_check_0's generic plan is cached already.
                await conn.execute("PREPARE wis2l_check_1 AS " + query.positional())
                forced = _nodes(await _plan(conn, explain.replace("check_0", "check_1")))
                await conn.execute("DEALLOCATE wis2l_check_1")
            finally:
                for setting in switches:
                    await conn.execute(f"SET LOCAL {setting} = DEFAULT")
            if any(n.get("Node Type") in ("Sort", "Incremental Sort") for n in forced):
                problems.append("keyset ORDER BY that no index serves (the plan sorts)")
        return problems

    async def _size(self, conn: psycopg.AsyncConnection[tuple[object, ...]], table: str) -> float:
        if table not in self._sizes:
            cur = await conn.execute(
                "SELECT greatest(reltuples, 0)::float8 FROM pg_class WHERE oid = %s::regclass",
                [table],
            )
            row = await cur.fetchone()
            value = row[0] if row else 0.0
            self._sizes[table] = value if isinstance(value, float) else 0.0
        return self._sizes[table]


async def _plan(conn: psycopg.AsyncConnection[tuple[object, ...]], explain: str) -> Any:
    cur = await conn.execute(explain)
    row = await cur.fetchone()
    return row[0] if row else []


def _nodes(plan: Any) -> list[dict[str, Any]]:
    """Every node of an ``EXPLAIN (FORMAT JSON)`` plan."""
    found: list[dict[str, Any]] = []
    stack = [entry["Plan"] for entry in plan]
    while stack:
        node = stack.pop()
        found.append(node)
        stack.extend(node.get("Plans", []))
    return found
