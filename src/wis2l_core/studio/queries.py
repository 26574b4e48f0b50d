"""The studio's SQL: keyset pages with filters and sorting, one row, related rows.

Every table and column name comes from the catalog and enters the text only as a
:class:`psycopg.sql.Identifier`; every value (filters, cursors, keys) is a parameter. The
values are sent untyped (psycopg sends ``str`` as ``unknown``), so PostgreSQL reads them as
the column's own type: a malformed one is a :class:`~wis2l_core.errors.ValidationError`.

A page is ``WHERE <filters> AND (<sort>, <key>) > (<cursor>) ORDER BY ... LIMIT n + 1``:
no ``OFFSET`` and no ``count(*)``, so page 10,000 costs what page 1 costs.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

import attrs
from psycopg import sql

from wis2l_core.db.pool import Database
from wis2l_core.errors import ValidationError
from wis2l_core.studio.catalog import Table

__all__ = [
    "COUNT_CAP",
    "OPERATORS",
    "Filter",
    "Page",
    "count_rows",
    "fetch_page",
    "fetch_related",
    "fetch_row",
]

COUNT_CAP = 10_000
"""Tables up to this many rows are counted exactly; bigger ones show the estimate."""

OPERATORS: dict[str, str] = {
    "eq": "=",
    "ne": "≠",
    "lt": "<",
    "le": "≤",
    "gt": ">",
    "ge": "≥",
    "contains": "contains",
    "null": "is null",
    "notnull": "is not null",
}
"""Filter operators: the name in the URL and how the UI shows it."""

_SQL_OPS = {"eq": "=", "ne": "<>", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
_CTID = "ctid"
_PARAMETER = re.compile(r"\bparameter \$(\d+)")


@attrs.frozen
class Filter:
    """``column op value`` (``value`` is ignored by ``null`` and ``notnull``)."""

    column: str
    op: str
    value: str = ""


@attrs.frozen
class Page:
    """One page of rows and the cursor of the next (``None`` on the last page)."""

    rows: list[dict[str, Any]]
    next_cursor: str | None


def _ident(table: Table) -> sql.Composable:
    return sql.Identifier(table.schema, table.name)


def _keys(table: Table, sort: str | None) -> list[str]:
    key = list(table.pk) or [_CTID]
    return ([sort] if sort and sort not in key else []) + key


def _check(table: Table, filters: list[Filter], sort: str | None) -> None:
    for f in filters:
        if table.column(f.column) is None:
            raise ValidationError(f"{table.key} has no column {f.column!r}", field="filter")
        if f.op not in OPERATORS:
            raise ValidationError(f"unknown filter operator {f.op!r}", field="filter")
    if sort is not None and sort not in table.indexed and sort not in table.pk:
        raise ValidationError(
            f"{table.key} can be sorted only on indexed columns "
            f"({', '.join(sorted(table.indexed)) or 'none'}), not {sort!r}",
            field="sort",
        )


def _where(filters: list[Filter], params: list[Any]) -> list[sql.Composable]:
    parts: list[sql.Composable] = []
    for f in filters:
        col = sql.Identifier(f.column)
        if f.op == "null":
            parts.append(sql.SQL("{} IS NULL").format(col))
        elif f.op == "notnull":
            parts.append(sql.SQL("{} IS NOT NULL").format(col))
        elif f.op == "contains":
            parts.append(sql.SQL("{}::text ILIKE %s").format(col))
            escaped = f.value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            params.append(f"%{escaped}%")
        else:
            parts.append(sql.SQL("{} " + _SQL_OPS[f.op] + " %s").format(col))
            params.append(f.value)
    return parts


def encode_cursor(sort: str | None, desc: bool, values: list[str | None]) -> str:
    """An opaque cursor: the last row's key values, bound to the sort it was made for."""
    raw = json.dumps({"s": sort, "d": desc, "k": values}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str | None, desc: bool, size: int) -> list[str | None]:
    """The key values of ``cursor``.

    Raises:
        ValidationError: not a cursor of this table and sort order.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        values = data["k"]
        ok = (
            data["s"] == sort
            and data["d"] is desc
            and isinstance(values, list)
            and len(values) == size
            and all(v is None or isinstance(v, str) for v in values)
        )
    except (binascii.Error, ValueError, KeyError, TypeError, RecursionError):
        ok = False  # RecursionError: JSON nested deeper than the parser goes
    if not ok:
        raise ValidationError("this cursor is not from this table and order", field="after")
    return values  # type: ignore[no-any-return]


def _after(
    table: Table, keys: list[str], values: list[str | None], desc: bool, params: list[Any]
) -> sql.Composable:
    op = sql.SQL("<" if desc else ">")
    key = keys[-len(table.pk or [_CTID]) :]
    key_ids = sql.SQL(", ").join(sql.Identifier(k) for k in key)
    key_vals = values[-len(key) :]
    key_ph = sql.SQL(", ").join(
        sql.SQL("%s::tid") if k == _CTID else sql.Placeholder() for k in key
    )
    if len(keys) == len(key):  # no sort column: the key alone
        params.extend(key_vals)
        return sql.SQL("({}) {} ({})").format(key_ids, op, key_ph)
    sort, value = keys[0], values[0]
    col = table.column(sort)
    nullable = col is not None and not col.notnull
    sort_id = sql.Identifier(sort)
    if not nullable:
        params.append(value)
        params.extend(key_vals)
        return sql.SQL("({}, {}) {} (%s, {})").format(sort_id, key_ids, op, key_ph)
    # PostgreSQL's default order, which an index scan gives in both directions: NULLs
    # last going up, first going down.
    if value is None:
        params.extend(key_vals)
        after_nulls = sql.SQL(" OR {} IS NOT NULL").format(sort_id) if desc else sql.SQL("")
        return sql.SQL("(({} IS NULL AND ({}) {} ({})){})").format(
            sort_id, key_ids, op, key_ph, after_nulls
        )
    params.extend([value, value, *key_vals])
    nulls = sql.SQL("") if desc else sql.SQL(" OR {} IS NULL").format(sort_id)
    return sql.SQL("({} {} %s OR ({} = %s AND ({}) {} ({})){})").format(
        sort_id, op, sort_id, key_ids, op, key_ph, nulls
    )


async def fetch_page(
    db: Database,
    table: Table,
    *,
    filters: list[Filter] = (),  # type: ignore[assignment]
    sort: str | None = None,
    desc: bool = False,
    after: str | None = None,
    limit: int = 50,
) -> Page:
    """One keyset page of ``table``.

    Args:
        db: the pool.
        table: from the catalog.
        filters: ANDed together.
        sort: an indexed column (ties and the rest in primary-key order), or ``None`` for
            primary-key order.
        desc: descending instead of ascending (NULLs last going up, first going down:
            PostgreSQL's default, so an index serves both directions).
        after: the previous page's ``next_cursor``.
        limit: rows per page, 1..500.

    Raises:
        ValidationError: an unknown column or operator, a sort on a column no index leads,
            a cursor from elsewhere, or a value the column's type refuses.
    """
    if not 1 <= limit <= 500:
        raise ValidationError("limit must be 1..500", field="limit")
    filters = list(filters)
    _check(table, filters, sort)
    keys = _keys(table, sort)
    params: list[Any] = []
    where = _where(filters, params)
    if after:
        values = decode_cursor(after, sort, desc, len(keys))
        where.append(_after(table, keys, values, desc, params))
    direction = sql.SQL(" DESC" if desc else "")
    order = sql.SQL(", ").join(sql.SQL("{}{}").format(sql.Identifier(k), direction) for k in keys)
    cursor_cols = sql.SQL(", ").join(
        sql.SQL("{}::text AS {}").format(sql.Identifier(k), sql.Identifier(f"__k{i}"))
        for i, k in enumerate(keys)
    )
    query = sql.SQL("SELECT *, {} FROM {}{} ORDER BY {} LIMIT {}").format(
        cursor_cols,
        _ident(table),
        sql.SQL(" WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL(""),
        order,
        sql.Literal(limit + 1),
    )
    try:
        rows = await db.fetch_all(query, params)
    except ValidationError as exc:  # a value the column's type refuses
        raise _refused_value(exc, table, filters) from exc.__cause__
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if more and rows:
        last = rows[-1]
        next_cursor = encode_cursor(sort, desc, [last[f"__k{i}"] for i in range(len(keys))])
    for row in rows:
        for i in range(len(keys)):
            row.pop(f"__k{i}", None)
    return Page(rows=rows, next_cursor=next_cursor)


def _refused_value(exc: ValidationError, table: Table, filters: list[Filter]) -> ValidationError:
    """Which filter value PostgreSQL refused, in plain words. The filters' values are the
    first parameters, in order; the cursor's come after them."""
    n = _refused_parameter(exc)
    valued = [f for f in filters if f.op not in ("null", "notnull")]
    if n is None:
        return exc
    if n > len(valued):
        return ValidationError("this cursor is not from this table and order", field="after")
    f = valued[n - 1]
    return _not_valid(table, f.column, f.value, f"the filter {f.column} {OPERATORS[f.op]}")


def _refused_parameter(exc: ValidationError) -> int | None:
    """The number of the parameter PostgreSQL refused (its error's context says
    "unnamed portal parameter $N"), or ``None``."""
    diag = getattr(exc.__cause__, "diag", None)
    found = _PARAMETER.search(getattr(diag, "context", None) or "")
    return int(found.group(1)) if found else None


def _not_valid(table: Table, name: str, value: str, what: str) -> ValidationError:
    column = table.column(name)
    kind = column.type if column is not None else "value"
    shown = value if len(value) <= 60 else value[:60] + "…"
    return ValidationError(
        f"{what} “{shown}” cannot be applied: “{shown}” is not a valid {kind}, the type of {name}",
        field=name,
    )


async def count_rows(db: Database, table: Table) -> tuple[int, bool]:
    """``(rows, exact)``: an exact count up to :data:`COUNT_CAP`, else the estimate.

    A table whose estimate (``pg_class.reltuples``, kept by autovacuum and ``ANALYZE``)
    is well past the cap is not counted at all. Otherwise the count stops at
    ``COUNT_CAP + 1`` rows, so it stays cheap even when the estimate is stale or missing
    (``-1``: never analyzed).
    """
    if table.estimate > 2 * COUNT_CAP:
        return int(table.estimate), False
    query = sql.SQL("SELECT count(*) AS n FROM (SELECT 1 FROM {} LIMIT {}) AS capped").format(
        _ident(table), sql.Literal(COUNT_CAP + 1)
    )
    n = int(await db.fetch_val(query) or 0)
    if n <= COUNT_CAP:
        return n, True
    return max(int(table.estimate), n), False


async def fetch_row(db: Database, table: Table, key: list[str]) -> dict[str, Any] | None:
    """The row whose primary key is ``key``, or ``None``.

    Raises:
        ValidationError: the table has no primary key, or ``key`` does not fit it.
    """
    if not table.pk or len(key) != len(table.pk):
        raise ValidationError(f"{table.key}: a row is named by its primary key", field="key")
    query = sql.SQL("SELECT * FROM {} WHERE ({}) = ({})").format(
        _ident(table),
        sql.SQL(", ").join(sql.Identifier(k) for k in table.pk),
        sql.SQL(", ").join(sql.Placeholder() for _ in table.pk),
    )
    try:
        return await db.fetch_one(query, key)
    except ValidationError as exc:  # a key value the column's type refuses
        n = _refused_parameter(exc)
        if n is None or n > len(key):
            raise
        name = table.pk[n - 1]
        raise _not_valid(table, name, key[n - 1], f"the key {name} =") from exc.__cause__


async def fetch_related(
    db: Database, table: Table, column: str, value: Any, limit: int = 20
) -> list[dict[str, Any]]:
    """Up to ``limit`` rows of ``table`` whose ``column`` equals ``value`` (key order)."""
    order = sql.SQL(", ").join(sql.Identifier(k) for k in (table.pk or (_CTID,)))
    query = sql.SQL("SELECT * FROM {} WHERE {} = %s ORDER BY {} LIMIT {}").format(
        _ident(table), sql.Identifier(column), order, sql.Literal(limit)
    )
    return await db.fetch_all(query, [str(value)])
