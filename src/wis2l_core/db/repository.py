"""What every repository shares: named queries, pages, the one write path, and the verbs
that differ only by table and model.

A repository names its query file and its model once::

    class UserRepository(Repository[User], DeleteById):
        table = "users"  # sql/queries/users.sql
        _row = staticmethod(_user)  # a row of it -> User

and inherits ``find_by_id`` (every repository), plus the verbs it mixes in:
:class:`FindAll`, :class:`FindByProject`, :class:`FindBySlug`, :class:`DeleteById`.

Every write goes through :meth:`Repository._write`, which runs the statement and inserts
its event into ``events`` (the audit log, which is also the outbox) in one transaction.
When the event is known before the write (creates, whose ids the library makes), both
statements and the transaction go to the server as one pipelined round trip.
"""

from __future__ import annotations

import enum
import functools
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    nullcontext,
)
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar
from uuid import UUID

import psycopg
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from wis2l_core._validate import check_enum, check_limit, check_text, check_uuid
from wis2l_core.catalogue import DomainEvent, event_payload
from wis2l_core.db.cursor import decode_cursor, keyset_page
from wis2l_core.db.errors import map_errors
from wis2l_core.db.pool import Connection, Database
from wis2l_core.db.queries import arrow_table
from wis2l_core.db.sql import Query, QueryFile, query_file
from wis2l_core.errors import NotFound, ValidationError
from wis2l_core.models import Page
from wis2l_core.sentinel import Unset
from wis2l_core.telemetry._db import transaction_span
from wis2l_core.telemetry._messaging import current_context

__all__ = [
    "DeleteById",
    "EventFor",
    "FindAll",
    "FindByProject",
    "FindBySlug",
    "Repository",
    "event_params",
    "set_field",
]

if TYPE_CHECKING:
    import pyarrow as pa

ModelT = TypeVar("ModelT")
E = TypeVar("E", bound=enum.Enum)

EventFor = DomainEvent | Callable[[DictRow], DomainEvent | None] | None
"""The event of a write: known up front, made from the written row, or none."""

_FIRST = UUID(int=0)


def set_field(
    params: dict[str, Any], field: str, value: object, check: Callable[[Any], Any]
) -> None:
    """Fill ``set_<field>``/``<field>`` for an ``update`` query's ``CASE WHEN`` pattern."""
    if isinstance(value, Unset):
        params[f"set_{field}"], params[field] = False, None
    else:
        params[f"set_{field}"], params[field] = True, check(value)


def event_params(event: DomainEvent) -> dict[str, Any]:
    """The ``events`` row for ``event``: its type, subsystem, subject, JSON payload and the
    trace context active now (see :mod:`wis2l_core.telemetry._messaging`)."""
    return {
        "id": event.id,
        "type": event.type,
        "subsystem": event.subsystem.value,
        "project_id": event.project_id,
        "subject": event.type,
        "payload": Jsonb(event_payload(event)),
        "trace_context": current_context(),  # the writer's span, or None (no SDK)
    }


class Repository(Generic[ModelT]):
    """Base of the table repositories; bound to the pool, or to one transaction's connection.

    A subclass sets ``table`` (its query file, ``sql/queries/<table>.sql``) and ``_row``
    (a ``staticmethod`` making its model of a row).

    Args:
        db: the runtime's database.
        conn: a connection inside an open transaction (``wis.transaction()``); when given,
            every call runs on it and commits or rolls back with it.
    """

    table: ClassVar[str]
    _row: Callable[[DictRow], ModelT]
    _delete_event: Callable[[DictRow], DomainEvent | None] | None = None
    """The event :meth:`DeleteById.delete` records, made from the deleted row (none if unset)."""

    def __init__(self, db: Database, conn: Connection | None = None) -> None:
        self._db = db
        self._conn = conn
        self._queries: QueryFile = query_file(self.table)

    async def find_by_id(self, id: UUID | str) -> ModelT | None:
        """Find one by id: ``wis.users.find_by_id(id)`` is a ``User`` or ``None``.

        Args:
            id: its id.

        Returns:
            The repository's model (``User`` for ``wis.users``, ...), or ``None``.

        Raises:
            ValidationError: ``id`` is not a UUID.
        """
        return await self._find("find_by_id", id=check_uuid("id", id))

    async def to_arrow(self, query: str = "find_all", /, **params: Any) -> pa.Table:
        """Every row of one of this table's listings as a ``pyarrow.Table`` (the ``arrow``
        extra), read through binary ``COPY`` like :meth:`Database.to_arrow
        <wis2l_core.db.queries.QueryMethods.to_arrow>`: no pages, no models::

            builds = await wis.builds.to_arrow()  # the whole table, oldest first
            failed = await wis.builds.to_arrow("find_all_by_status", status="failed")

        Inside ``wis.transaction()`` (``tx.builds.to_arrow()``) it reads in that
        transaction.

        Args:
            query: a query of the repository's file (``sql/queries/<table>.sql``);
                a listing's ``after``/``limit`` are set to read it whole.
            params: the query's other parameters.

        Raises:
            ValidationError: no such query in the file, or a bad parameter.
            ConfigError: the ``arrow`` extra is not installed.
        """
        if query not in self._queries:
            raise ValidationError(f"{self.table} has no query {query!r}", field="query")
        borrow = functools.partial(self._db.connection, self._conn)
        return await arrow_table(borrow, self._db.log_query, self._q(query), params)

    def _q(self, name: str) -> Query:
        return self._queries[name]

    async def _find(self, name: str, **params: Any) -> ModelT | None:
        """Run query ``name``; its first row as the model, or ``None``."""
        rows = await self._db.run(self._queries[name], params, self._conn)
        return self._row(rows[0]) if rows else None

    async def _all(self, name: str, **params: Any) -> list[DictRow]:
        return await self._db.run(self._q(name), params, self._conn, many=True)

    async def _page(
        self, name: str, *, limit: int, after: str | None, **params: Any
    ) -> Page[ModelT]:
        """Run a keyset query (``id > %(after)s ORDER BY id LIMIT %(limit)s``) as a page.

        One row more than ``limit`` is fetched to learn whether a next page exists.
        """
        scope = f"{self.table}.{name}"
        limit = check_limit(limit)
        start = decode_cursor(scope, after) or _FIRST
        rows = await self._all(name, after=start, limit=limit + 1, **params)
        return keyset_page(scope, rows, limit, self._row)

    def _transaction_span(self) -> AbstractContextManager[object]:
        # A ``transaction`` span when this call opens a transaction of its own.
        return transaction_span() if self._conn is None else nullcontext()

    def _transaction(self, conn: Connection) -> AbstractAsyncContextManager[Any]:
        # Inside wis.transaction() the caller's transaction is the unit of work.
        return nullcontext() if self._conn is not None else conn.transaction()

    @asynccontextmanager
    async def _unit(self) -> AsyncIterator[Connection]:
        """A connection in one transaction (the caller's, inside ``wis.transaction()``).

        For writes that need several statements decided one after another; each statement
        runs with :meth:`_exec` and the event is recorded with :meth:`_record`.
        """
        with self._transaction_span():
            async with self._db.connection(self._conn) as conn:
                with map_errors():
                    async with self._transaction(conn):
                        yield conn

    async def _exec(self, conn: Connection, name: str, params: dict[str, Any]) -> DictRow | None:
        """Run query ``name`` on ``conn`` (inside :meth:`_unit`); return its first row."""
        query = self._q(name)
        start = time.perf_counter()
        cur = await conn.execute(query.text, params, prepare=True)
        row = await cur.fetchone()
        self._db.log_query(query, start)
        return row

    async def _record(self, conn: Connection, event: DomainEvent) -> None:
        """Record ``event`` in the outbox on ``conn`` (inside :meth:`_unit`)."""
        record = query_file("events")["insert_outbox"]
        await conn.execute(record.text, event_params(event), prepare=True)

    async def _write(
        self, name: str, params: dict[str, Any], event: EventFor = None
    ) -> DictRow | None:
        """Run write ``name`` and record ``event`` with it, atomically.

        Returns:
            The statement's first row (``RETURNING``), or ``None`` if it touched no row;
            with no row, no event is recorded.
        """
        rows = await self._write_many(name, [params], event)
        return rows[0] if rows else None

    async def _write_model(
        self, name: str, params: dict[str, Any], event: EventFor = None
    ) -> ModelT:
        """Run write ``name``, which always returns its row (a create); that row as the model."""
        row = await self._write(name, params, event)
        assert row is not None
        return self._row(row)

    async def _write_found(
        self, name: str, params: dict[str, Any], event: EventFor = None, *, noun: str
    ) -> DictRow:
        """Run write ``name`` on the row ``params["id"]``; return the row it returns.

        Raises:
            NotFound: no ``noun`` has this id (the statement returned no row).
        """
        row = await self._write(name, params, event)
        if row is None:
            raise NotFound(f"no {noun} with id {params['id']}")
        return row

    async def _write_many(
        self, name: str, params_seq: Sequence[dict[str, Any]], event: EventFor = None
    ) -> list[DictRow]:
        """Run write ``name`` once per parameter set plus one event, in one transaction."""
        query = self._q(name)
        record = query_file("events")["insert_outbox"]
        start = time.perf_counter()
        with self._transaction_span():
            async with self._db.connection(self._conn) as conn:
                with map_errors():
                    async with conn.pipeline():
                        async with self._transaction(conn):
                            cursors = [
                                await conn.execute(query.text, p, prepare=True) for p in params_seq
                            ]
                            if isinstance(event, DomainEvent):
                                await conn.execute(record.text, event_params(event), prepare=True)
                            elif event is not None:
                                rows = await _fetch(cursors)
                                made = event(rows[0]) if rows else None
                                if made is not None:
                                    await conn.execute(
                                        record.text, event_params(made), prepare=True
                                    )
                        if event is None or isinstance(event, DomainEvent):
                            rows = await _fetch(cursors)
        self._db.log_query(query, start, count=len(params_seq))
        return rows


class _Rows(Protocol[ModelT]):
    """What the verbs below use of a :class:`Repository` (their ``self``)."""

    @property
    def _row(self) -> Callable[[DictRow], ModelT]: ...

    @property
    def _delete_event(self) -> Callable[[DictRow], DomainEvent | None] | None: ...

    async def _find(self, name: str, **params: Any) -> ModelT | None: ...

    async def _page(
        self, name: str, *, limit: int, after: str | None, **params: Any
    ) -> Page[ModelT]: ...

    async def _write(
        self, name: str, params: dict[str, Any], event: EventFor = None
    ) -> DictRow | None: ...


class FindAll:
    """``find_all()``: every row, in creation order (mixed into a :class:`Repository`)."""

    async def find_all(
        self: _Rows[ModelT], *, limit: int = 50, after: str | None = None
    ) -> Page[ModelT]:
        """Every row, oldest first (in creation order).

        Args:
            limit: page size, 1..1000.
            after: the ``next_cursor`` of the previous page.

        Returns:
            One page; ``next_cursor`` is ``None`` on the last one.

        Raises:
            ValidationError: a bad limit or cursor.
        """
        return await self._page("find_all", limit=limit, after=after)

    async def _find_all_by(
        self: _Rows[ModelT],
        name: str,
        column: str,
        value: E | str | None,
        enum_cls: type[E],
        *,
        limit: int,
        after: str | None,
    ) -> Page[ModelT]:
        """For a ``find_all`` with a filter: with ``value``, the page of query ``name``
        (the rows whose enum ``column`` is ``value``, checked against ``enum_cls``);
        without, the page of ``find_all``."""
        if value is None:
            return await self._page("find_all", limit=limit, after=after)
        checked = check_enum(column, value, enum_cls).value
        return await self._page(name, limit=limit, after=after, **{column: checked})


class FindByProject:
    """``find_by_project_id()``: one project's rows (mixed into a :class:`Repository`)."""

    async def find_by_project_id(
        self: _Rows[ModelT], project_id: UUID | str, *, limit: int = 50, after: str | None = None
    ) -> Page[ModelT]:
        """The project's rows, oldest first (in creation order).

        Args:
            project_id: the project.
            limit: page size, 1..1000.
            after: the ``next_cursor`` of the previous page.

        Returns:
            One page; ``next_cursor`` is ``None`` on the last one.

        Raises:
            ValidationError: a bad project id, limit or cursor.
        """
        pid = check_uuid("project_id", project_id)
        return await self._page("find_by_project_id", limit=limit, after=after, project_id=pid)


class FindBySlug:
    """``find_by_slug()`` (mixed into a :class:`Repository`)."""

    async def find_by_slug(self: _Rows[ModelT], slug: str) -> ModelT | None:
        """Find one by slug (a slug that could never be valid finds nothing).

        Args:
            slug: its slug.

        Returns:
            The repository's model, or ``None``.

        Raises:
            ValidationError: ``slug`` is not text of 1..64 characters.
        """
        return await self._find("find_by_slug", slug=check_text("slug", slug, max_len=64))


class DeleteById:
    """``delete(id)``, recording the repository's ``_delete_event`` if it has one."""

    async def delete(self: _Rows[Any], id: UUID | str) -> bool:
        """Delete the row with this id (what else goes with it: see the repository).

        Args:
            id: its id.

        Returns:
            ``False`` if there was no such row (and then no event is recorded).

        Raises:
            ValidationError: ``id`` is not a UUID.
        """
        params = {"id": check_uuid("id", id)}
        return await self._write("delete", params, self._delete_event) is not None


async def _fetch(cursors: Sequence[psycopg.AsyncCursor[DictRow]]) -> list[DictRow]:
    rows: list[DictRow] = []
    for cur in cursors:
        row = await cur.fetchone()
        if row is not None:
            rows.append(row)
    return rows
