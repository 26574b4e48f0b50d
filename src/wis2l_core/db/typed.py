"""What the modules that ``wis2l db generate`` writes call at run time.

A generated function hands its named query, its parameters and its row class to
:func:`one`, :func:`many` or :func:`page`; the rows are built by psycopg's row factory
straight from the column values (``Row(*values)``), with no dict in between. Each call
borrows a connection the way :class:`~wis2l_core.db.queries.QueryMethods` does, so it runs
on the pool (``wis.database``) or inside a transaction (``tx``), is logged like the other
queries, and every driver error becomes one of ours.

The generated modules import only this module from wis2l-core (``from wis2l_core.db import
typed``), so their imports sort the same in any project; the names they use are
re-exported here: :class:`~wis2l_core.db.sql.Query`,
:class:`~wis2l_core.db.queries.QueryMethods`, :class:`~wis2l_core.models.Page`,
:data:`~wis2l_core.models.JSON`, and attrs' ``frozen``, ``field`` and ``optional``
(converter).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from attrs import field, frozen
from attrs.converters import optional
from psycopg.rows import args_row
from psycopg.types.json import Jsonb

from wis2l_core._validate import check_limit
from wis2l_core.db.cursor import decode_cursor, encode_cursor
from wis2l_core.db.errors import map_errors
from wis2l_core.db.queries import QueryMethods
from wis2l_core.db.sql import Query
from wis2l_core.errors import ValidationError
from wis2l_core.models import JSON, Page

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "JSON",
    "Keyed",
    "Page",
    "Query",
    "QueryMethods",
    "field",
    "frozen",
    "jsonb",
    "many",
    "one",
    "optional",
    "page",
    "to_arrow",
]

T = TypeVar("T")


class Keyed(Protocol):
    """A row of a keyset page: its ``id`` names it in the next page's cursor."""

    @property
    def id(self) -> uuid.UUID:
        """The row's key (the query orders by it)."""
        ...


K = TypeVar("K", bound=Keyed)


def jsonb(value: JSON) -> Jsonb | None:
    """A JSON parameter as psycopg sends it; ``None`` is SQL ``NULL``."""
    return None if value is None else Jsonb(value)


async def _fetch(
    db: QueryMethods,
    query: Query,
    params: Mapping[str, Any],
    row: Callable[..., T],
    *,
    first: bool,
) -> list[T]:
    start = time.perf_counter()
    async with db._borrow() as conn:  # the same borrow as QueryMethods
        with map_errors():
            cur = conn.cursor(row_factory=args_row(row))
            await cur.execute(query.text, params, prepare=True)
            if first:
                found = await cur.fetchone()
                rows = [] if found is None else [found]
            else:
                rows = await cur.fetchall()
    db.log_query(query, start)
    return rows


async def one(
    db: QueryMethods, query: Query, params: Mapping[str, Any], row: Callable[..., T]
) -> T | None:
    """Run ``query`` and build its first row with ``row(*values)``; ``None`` if no row.

    Raises:
        Wis2lError: as :meth:`~wis2l_core.db.queries.QueryMethods.fetch_one`.
    """
    rows = await _fetch(db, query, params, row, first=True)
    return rows[0] if rows else None


async def many(
    db: QueryMethods, query: Query, params: Mapping[str, Any], row: Callable[..., T]
) -> list[T]:
    """Run ``query`` and build every row with ``row(*values)``.

    Raises:
        Wis2lError: as :meth:`~wis2l_core.db.queries.QueryMethods.fetch_all`.
    """
    return await _fetch(db, query, params, row, first=False)


async def page(
    db: QueryMethods,
    query: Query,
    params: Mapping[str, Any],
    row: Callable[..., K],
    *,
    limit: int,
    after: str | None,
) -> Page[K]:
    """One keyset page of ``query``, with the cursors of :meth:`QueryMethods.page
    <wis2l_core.db.queries.QueryMethods.page>` (a cursor from one works with the other).

    The query takes ``%(after)s::uuid`` and ``%(limit)s::int`` and orders by ``id``; one
    row more than ``limit`` is fetched to learn whether a next page exists.

    Raises:
        ValidationError: a bad ``limit``, or a cursor that is not from this list.
        Wis2lError: as :meth:`~wis2l_core.db.queries.QueryMethods.fetch_all`.
    """
    scope = f"{query.file}.{query.name}"
    size = check_limit(limit)
    start = decode_cursor(scope, after) or uuid.UUID(int=0)
    rows = await many(db, query, {**params, "after": start, "limit": size + 1}, row)
    cursor = encode_cursor(scope, rows[size - 1].id) if len(rows) > size else None
    return Page(items=tuple(rows[:size]), next_cursor=cursor)


def query_of(fn: Callable[..., Any] | Query) -> Query:
    """The named query a generated function runs (``_<NAME>`` of its module).

    Raises:
        ValidationError: ``fn`` is neither a :class:`Query` nor a generated function.
    """
    if isinstance(fn, Query):
        return fn
    found = getattr(fn, "__globals__", {}).get("_" + getattr(fn, "__name__", "").upper())
    if not isinstance(found, Query):
        raise ValidationError(
            f"{fn!r} is not a function written by `wis2l db generate`", field="fn"
        )
    return found


async def to_arrow(db: QueryMethods, fn: Callable[..., Any] | Query, /, **params: Any) -> pa.Table:
    """The rows of a generated query function as a ``pyarrow.Table`` (the ``arrow`` extra),
    read through binary ``COPY`` like :meth:`QueryMethods.to_arrow
    <wis2l_core.db.queries.QueryMethods.to_arrow>` instead of building a row object per
    row::

        from generated import playtest
        table = await typed.to_arrow(wis.database, playtest.sessions_since, day=day)

    Args:
        db: ``wis.database`` or a transaction.
        fn: a function of a generated module (or its :class:`Query`).
        params: the query's parameters, by name (a ``:page`` query is read whole
            unless ``after``/``limit`` are given).

    Raises:
        ValidationError: ``fn`` is not a generated function, or a bad parameter.
        ConfigError: the ``arrow`` extra is not installed.
        Wis2lError: as :meth:`~wis2l_core.db.queries.QueryMethods.to_arrow`.
    """
    return await db.to_arrow(query_of(fn), params)
