"""Your own SQL: ``fetch_one``, ``fetch_all``, ``fetch_val`` and ``execute``; and
``to_arrow``/``arrow_batches`` for whole tables (the ``arrow`` extra, imported on first use).

:class:`QueryMethods` is shared by :class:`~wis2l_core.db.pool.Database` (each call on a
pooled connection, in autocommit) and :class:`~wis2l_core.db.repositories.Transaction`
(each call on the transaction's connection, so it commits or rolls back with the
repository writes made there)::

    row = await wis.database.fetch_one("SELECT count(*) AS n FROM users")
    async with wis.transaction() as tx:
        project = await tx.projects.create(...)
        await tx.execute("UPDATE my_table SET project = %(p)s", {"p": project.id})

A statement is a ``str`` with psycopg placeholders (``%s`` with a sequence of values,
``%(name)s`` with a mapping), a :mod:`psycopg.sql` composition (for identifiers), or a
named :class:`~wis2l_core.db.sql.Query`. Values are always sent as parameters, never
spliced into the text. Rows are dicts, or instances of ``row_type``. Every driver error
becomes one of ours (:func:`~wis2l_core.db.errors.map_errors`).
"""

from __future__ import annotations

import functools
import hashlib
import re
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar, overload

import psycopg
from psycopg import sql as pgsql
from psycopg.rows import DictRow

from wis2l_core._validate import check_limit
from wis2l_core.db.cursor import decode_cursor, keyset_page
from wis2l_core.db.errors import map_errors
from wis2l_core.db.sql import Query
from wis2l_core.errors import ConfigError, ValidationError
from wis2l_core.models import Page

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["ARROW_BATCH_ROWS", "Params", "QueryMethods", "Statement", "arrow_batches", "label"]

ARROW_BATCH_ROWS = 16_384
"""Rows per Arrow batch of :meth:`QueryMethods.to_arrow` (fewer when rows are wide)."""

_ALL_ROWS = 2**31 - 1  # a listing's %(limit)s::int when it is read whole

T = TypeVar("T")

Statement: TypeAlias = str | pgsql.Composable | Query
"""What the methods run: SQL text, a :mod:`psycopg.sql` composition, or a named query."""

Params: TypeAlias = Mapping[str, Any] | Sequence[Any] | None
"""Values for the placeholders: a mapping for ``%(name)s``, a sequence for ``%s``."""

_VERB = re.compile(r"\s*(?:--[^\n]*\n\s*)*([A-Za-z]+)")


def label(statement: Statement) -> tuple[str, str]:
    """(name, file) for the query log: never the values, and never the text of your SQL.

    A named query logs as ``<file>.<name>``; your own SQL as its first keyword and a short
    digest of its text (``sql.select#1a2b3c4d``), so repeated statements can be told
    apart without logging what an app may have written into them.
    """
    if isinstance(statement, Query):
        return statement.name, statement.file
    if isinstance(statement, str):
        match = _VERB.match(statement)
        verb = match.group(1).lower() if match else "statement"
        digest = hashlib.blake2s(statement.encode(errors="replace"), digest_size=4).hexdigest()
        return f"{verb}#{digest}", "sql"
    return "composed", "sql"


def _statement(statement: object) -> tuple[Any, bool | None]:
    """The text psycopg runs and whether to prepare it (named queries: always)."""
    if isinstance(statement, Query):
        return statement.text, True
    if isinstance(statement, str | pgsql.Composable):
        return statement, None
    raise ValidationError(
        f"sql must be a str, a psycopg.sql composition or a Query, not {type(statement).__name__}",
        field="sql",
    )


def _params(params: object) -> Any:
    if params is None or isinstance(params, Mapping):
        return params
    if isinstance(params, Sequence) and not isinstance(params, str | bytes | bytearray):
        return params
    raise ValidationError(
        f"params must be a mapping or a sequence, not {type(params).__name__}", field="params"
    )


def _arrow() -> ModuleType:
    """:mod:`wis2l_core.db.arrow`, imported on first use (pyarrow loads only then)."""
    try:
        from wis2l_core.db import arrow
    except ImportError as exc:
        raise ConfigError(
            f"to_arrow needs the arrow extra: pip install 'wis2l-core[arrow]' ({exc})"
        ) from exc
    return arrow


def _listing(statement: Statement, params: Any) -> Any:
    """A keyset listing (a named query taking ``after`` and ``limit``) is read whole:
    from the first row, with no limit, unless ``params`` set them."""
    if not isinstance(statement, Query) or not {"after", "limit"} <= set(statement.params):
        return params
    if params is not None and not isinstance(params, Mapping):
        raise ValidationError("a named query takes a mapping of params", field="params")
    return {"after": uuid.UUID(int=0), "limit": _ALL_ROWS, **(params or {})}


async def arrow_batches(
    borrow: Callable[[], AbstractAsyncContextManager[psycopg.AsyncConnection[DictRow]]],
    log: Callable[[Statement, float, int], None],
    sql: Statement,
    params: Params = None,
    *,
    batch_rows: int = ARROW_BATCH_ROWS,
) -> AsyncGenerator[pa.RecordBatch, None]:
    """``sql``'s rows as Arrow record batches, on a connection from ``borrow`` (see
    :meth:`QueryMethods.arrow_batches`); ``log`` gets the statement, start and row count."""
    arrow = _arrow()
    text, _ = _statement(sql)
    values = _params(_listing(sql, params))
    start = time.perf_counter()
    rows = 0
    async with borrow() as conn:
        with map_errors():
            async for batch in arrow.read_batches(conn, text, values, batch_rows=batch_rows):
                rows += batch.num_rows
                yield batch
    log(sql, start, rows)


async def arrow_table(
    borrow: Callable[[], AbstractAsyncContextManager[psycopg.AsyncConnection[DictRow]]],
    log: Callable[[Statement, float, int], None],
    sql: Statement,
    params: Params = None,
    *,
    batch_rows: int = ARROW_BATCH_ROWS,
) -> pa.Table:
    """``sql``'s rows as one Arrow table (see :meth:`QueryMethods.to_arrow`)."""
    batches = [b async for b in arrow_batches(borrow, log, sql, params, batch_rows=batch_rows)]
    return _arrow().table_of(batches)


def _build(row_type: Callable[..., T], row: DictRow) -> T:
    try:
        return row_type(**row)
    except TypeError as exc:
        name = getattr(row_type, "__name__", repr(row_type))
        raise ValidationError(
            f"row_type {name} does not take the columns {sorted(row)}: {exc}", field="row_type"
        ) from exc


class QueryMethods:
    """Run your own SQL: each call borrows a connection (see the subclasses) for itself."""

    def _borrow(self) -> AbstractAsyncContextManager[psycopg.AsyncConnection[DictRow]]:
        raise NotImplementedError

    def log_query(self, query: Statement, start: float, count: int = 1) -> None:
        """Log ``query``'s name and duration (the subclasses decide where and when)."""

    async def _run(self, statement: Statement, params: Params, many: bool) -> list[DictRow]:
        text, prepare = _statement(statement)
        values = _params(params)
        start = time.perf_counter()
        async with self._borrow() as conn:
            with map_errors():
                cur = await conn.execute(text, values, prepare=prepare)
                if many:
                    rows = await cur.fetchall()
                else:
                    row = await cur.fetchone()
                    rows = [] if row is None else [row]
        self.log_query(statement, start)
        return rows

    @overload
    async def fetch_one(
        self, sql: Statement, params: Params = None, *, row_type: None = None
    ) -> dict[str, Any] | None: ...

    @overload
    async def fetch_one(
        self, sql: Statement, params: Params = None, *, row_type: Callable[..., T]
    ) -> T | None: ...

    async def fetch_one(
        self, sql: Statement, params: Params = None, *, row_type: Callable[..., T] | None = None
    ) -> dict[str, Any] | T | None:
        """Run ``sql`` and return its first row, or ``None`` when it returns no row.

        Args:
            sql: a ``str`` with ``%s``/``%(name)s`` placeholders, a :mod:`psycopg.sql`
                composition, or a named :class:`~wis2l_core.db.sql.Query`.
            params: the placeholders' values: a sequence for ``%s``, a mapping for
                ``%(name)s``; always sent as parameters, never spliced into the text.
            row_type: build the row with ``row_type(**row)`` (an attrs class, a
                dataclass ...) instead of returning a dict.

        Returns:
            The first row as a dict of column name to value (or a ``row_type``), or
            ``None``.

        Raises:
            ValidationError: a value the database refused (a NUL byte in a string, a
                malformed number ...), a CHECK or NOT NULL violation, or a ``sql``,
                ``params`` or ``row_type`` of the wrong kind.
            Conflict: a unique key is taken.
            NotFound: a foreign key names a missing row.
            ServiceUnavailable: no free connection in time, or the database is down.
            Wis2lError: any other database error (a syntax error, a missing table ...).
        """
        rows = await self._run(sql, params, many=False)
        if not rows:
            return None
        return rows[0] if row_type is None else _build(row_type, rows[0])

    @overload
    async def fetch_all(
        self, sql: Statement, params: Params = None, *, row_type: None = None
    ) -> list[dict[str, Any]]: ...

    @overload
    async def fetch_all(
        self, sql: Statement, params: Params = None, *, row_type: Callable[..., T]
    ) -> list[T]: ...

    async def fetch_all(
        self, sql: Statement, params: Params = None, *, row_type: Callable[..., T] | None = None
    ) -> list[dict[str, Any]] | list[T]:
        """Run ``sql`` and return all its rows (see :meth:`fetch_one` for the arguments).

        Returns:
            Every row, as dicts or ``row_type`` instances.

        Raises:
            Wis2lError: as :meth:`fetch_one`.
        """
        rows = await self._run(sql, params, many=True)
        if row_type is None:
            return list(rows)
        return [_build(row_type, row) for row in rows]

    @overload
    async def page(
        self,
        query: Query,
        params: Mapping[str, Any] | None = None,
        *,
        limit: int = 50,
        after: str | None = None,
        row_type: None = None,
    ) -> Page[dict[str, Any]]: ...

    @overload
    async def page(
        self,
        query: Query,
        params: Mapping[str, Any] | None = None,
        *,
        limit: int = 50,
        after: str | None = None,
        row_type: Callable[..., T],
    ) -> Page[T]: ...

    async def page(
        self,
        query: Query,
        params: Mapping[str, Any] | None = None,
        *,
        limit: int = 50,
        after: str | None = None,
        row_type: Callable[..., T] | None = None,
    ) -> Page[dict[str, Any]] | Page[T]:
        """Run a keyset query of yours as one page, with the library's opaque cursors.

        The query keys on a UUID column ``id``: it takes ``%(after)s::uuid`` and
        ``%(limit)s::int`` and reads ``WHERE id > %(after)s::uuid ... ORDER BY id LIMIT
        %(limit)s::int``. One row more than ``limit`` is fetched to learn whether a next
        page exists; no ``OFFSET``, no ``count(*)``.

        Args:
            query: a named :class:`~wis2l_core.db.sql.Query` (its file and name scope the
                cursor: a cursor from another list is refused).
            params: the query's other values (a mapping).
            limit: rows per page, 1..1000.
            after: the previous page's ``next_cursor``; ``None`` for the first page.
            row_type: build each row with ``row_type(**row)`` instead of a dict.

        Returns:
            The page: ``items`` and ``next_cursor`` (``None`` on the last page).

        Raises:
            ValidationError: a bad ``limit``, a cursor that is not from this list, a
                ``params`` that sets ``after`` or ``limit``, or rows without a UUID ``id``.
            Wis2lError: as :meth:`fetch_one`.
        """
        if not isinstance(query, Query):
            raise ValidationError("page() takes a named Query (load_queries)", field="query")
        if params is not None and not isinstance(params, Mapping):
            raise ValidationError("params must be a mapping", field="params")
        if params and ("after" in params or "limit" in params):
            raise ValidationError(
                "pass after= and limit= as arguments, not in params", field="params"
            )
        scope = f"{query.file}.{query.name}"
        size = check_limit(limit)
        start = decode_cursor(scope, after) or uuid.UUID(int=0)
        rows = await self._run(
            query, {**(params or {}), "after": start, "limit": size + 1}, many=True
        )
        if row_type is None:
            return keyset_page(scope, rows, size, dict)
        return keyset_page(scope, rows, size, functools.partial(_build, row_type))

    async def fetch_val(self, sql: Statement, params: Params = None) -> Any:
        """Run ``sql`` and return the first column of its first row (``None`` if no row).

        Raises:
            Wis2lError: as :meth:`fetch_one`.
        """
        rows = await self._run(sql, params, many=False)
        return next(iter(rows[0].values()), None) if rows else None

    async def execute(self, sql: Statement, params: Params = None) -> int:
        """Run ``sql`` for its effect; return the number of rows it touched (``-1`` if the
        statement does not report one, e.g. DDL).

        Raises:
            Wis2lError: as :meth:`fetch_one`.
        """
        text, prepare = _statement(sql)
        values = _params(params)
        start = time.perf_counter()
        async with self._borrow() as conn:
            with map_errors():
                cur = await conn.execute(text, values, prepare=prepare)
                count = cur.rowcount
        self.log_query(sql, start)
        return count

    async def to_arrow(
        self, sql: Statement, params: Params = None, *, batch_rows: int = ARROW_BATCH_ROWS
    ) -> pa.Table:
        """Run ``sql`` and return its rows as a ``pyarrow.Table`` (the ``arrow`` extra).

        The rows come through PostgreSQL's binary ``COPY (sql) TO STDOUT`` and are
        decoded straight into Arrow columns, a batch at a time, with no Python object
        per value; the types are exact (see :mod:`wis2l_core.db.arrow` for the table:
        ``uuid`` is ``arrow.uuid``, ``timestamptz`` a UTC timestamp, ``numeric(p, s)`` a
        decimal, ``jsonb`` its JSON text, an enum a dictionary of its labels). The
        schema comes from PostgreSQL, so an empty result still has its columns.

        pandas, polars and DuckDB take the table as it is: ``table.to_pandas()``,
        ``polars.from_arrow(table)``, ``duckdb.sql("SELECT ... FROM table")``.

        Args:
            sql: a ``SELECT`` (or ``VALUES``/``WITH``) as for :meth:`fetch_all`. A
                named listing query (one taking ``%(after)s`` and ``%(limit)s``) is read
                whole unless ``params`` sets them.
            params: the placeholders' values (bound client-side: ``COPY`` takes no
                server-side parameters; still sent as literals, never as raw text).
            batch_rows: rows decoded at a time (fewer when rows are wide).

        Returns:
            A ``pyarrow.Table`` of one chunk per batch.

        Raises:
            ConfigError: the ``arrow`` extra (pyarrow, numpy) is not installed.
            ValidationError: a column whose type has no Arrow decoding here (the message
                names it; cast it in the query, e.g. ``tags::text``), a numeric ``NaN``
                in a ``numeric(p, s)`` column, or a bad ``params``/``batch_rows``.
            Wis2lError: a bad query, as :meth:`fetch_one`.
        """
        return await arrow_table(self._borrow, self.log_query, sql, params, batch_rows=batch_rows)

    def arrow_batches(
        self, sql: Statement, params: Params = None, *, batch_rows: int = ARROW_BATCH_ROWS
    ) -> AsyncGenerator[pa.RecordBatch, None]:
        """Like :meth:`to_arrow`, as ``pyarrow.RecordBatch``es one at a time, so memory
        stays bounded by one batch (e.g. to write Parquet as the rows come). There is at
        least one batch (an empty result gives one empty batch with the schema).

        The connection is held until the iteration ends; close an iteration you leave
        early (``async with contextlib.aclosing(db.arrow_batches(...)) as batches:``).

        Raises:
            Wis2lError: as :meth:`to_arrow`.
        """
        return arrow_batches(self._borrow, self.log_query, sql, params, batch_rows=batch_rows)
