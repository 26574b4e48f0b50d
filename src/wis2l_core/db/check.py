"""``wis2l db check``: prepare every named query against a migrated database.

Each query of ``sql/queries/*.sql`` is sent as ``PREPARE`` (parsed, analysed and planned
by the server, never executed) inside one transaction that is rolled back at the end, so
a typo, a renamed column or a missing ``::type`` cast fails CI instead of production.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import attrs
import psycopg

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
) -> CheckReport:
    """Prepare every query of every ``*.sql`` file in ``directory``; report the failures.

    Args:
        database_url: a migrated database.
        directory: the query files (default: the package's ``sql/queries``).
        app_directories: the app's own query folders (``Settings.queries``), checked
            after ``directory``; their failures show the folder's path.
        connect_timeout: seconds to connect.

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
    with map_errors():
        conn = await psycopg.AsyncConnection.connect(
            database_url,
            connect_timeout=max(1, round(connect_timeout)),
            application_name="wis2l-core check",
        )
    async with conn:
        with map_errors():
            await _require_schema(conn)
            # One transaction, always rolled back; each query gets a savepoint so that one
            # failure does not abort the rest.
            async with conn.transaction(force_rollback=True):
                for shown, file, text in sources:
                    found: list[QueryFailure] = []
                    checked += await _check_file(conn, file, text, found)
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
        failures.extend(await _check_one(conn, lines, query, file))
    return checked


async def _check_one(
    conn: psycopg.AsyncConnection[tuple[object, ...]], lines: list[str], query: Query, file: str
) -> list[QueryFailure]:
    found = [
        QueryFailure(file, query.line, query.name, f"parameter %({name})s has no ::type cast")
        for name in dict.fromkeys(_UNCAST.findall(_COMMENT.sub("", query.text)))
    ]
    sql = query.positional()
    try:
        async with conn.transaction():  # a savepoint: one failure does not end the check
            await conn.execute(PREPARE + sql)
            await conn.execute("DEALLOCATE wis2l_check_0")
    except psycopg.OperationalError:
        raise
    except psycopg.Error as exc:
        message = exc.diag.message_primary or str(exc)
        found.append(QueryFailure(file, error_line(lines, query, sql, exc), query.name, message))
    return found
