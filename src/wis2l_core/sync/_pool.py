"""The synchronous PostgreSQL pool: psycopg_pool's ``ConnectionPool``, set up as the async one.

Connections are made with the same options as :class:`wis2l_core.db.pool.Database`'s
(:func:`~wis2l_core.db.connect.connect_kwargs`: dict rows, autocommit, the statement
timeout, prepared statements unless behind a pooler), JSON goes through orjson both
ways, named queries run prepared, and every psycopg error leaves as ours
(:func:`~wis2l_core.db.errors.map_errors`). The generated repositories
(:mod:`wis2l_core.sync.db`) use it exactly as the asynchronous ones use ``Database``.

Hand-written: a pool is I/O by nature, and psycopg_pool has its own synchronous twin.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import orjson
import psycopg
import psycopg_pool
from psycopg.rows import DictRow
from psycopg.types.json import set_json_dumps, set_json_loads

from wis2l_core.config import Settings
from wis2l_core.db.connect import connect_kwargs
from wis2l_core.db.errors import map_errors
from wis2l_core.db.sql import Query
from wis2l_core.errors import ServiceUnavailable
from wis2l_core.sync.db.queries import QueryMethods, Statement, label

__all__ = ["Connection", "Database", "sync_connect_kwargs"]

Connection = psycopg.Connection[DictRow]
"""A synchronous psycopg connection whose rows are dicts."""

log = logging.getLogger("wis2l_core.db")


def _json_dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def configure_connection(conn: Connection) -> None:
    """Set up a new connection: orjson for JSON/JSONB both ways."""
    set_json_dumps(_json_dumps, conn)
    set_json_loads(orjson.loads, conn)


def sync_connect_kwargs(settings: Settings) -> dict[str, Any]:
    """:func:`connect_kwargs` without its ``cursor_factory``, an asyncio cursor.

    The synchronous API records no spans yet (docs/guides/sync.md); its connections use
    psycopg's own cursor, and named queries run as they do without telemetry.
    """
    kwargs = connect_kwargs(settings)
    del kwargs["cursor_factory"]
    return kwargs


class Database(QueryMethods):
    """A :class:`psycopg_pool.ConnectionPool` and query execution over it.

    Also runs an app's own SQL: ``fetch_one``, ``fetch_all``, ``fetch_val``, ``page`` and
    ``execute``, as :class:`wis2l_core.db.pool.Database` does. No I/O until :meth:`open`.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pool: psycopg_pool.ConnectionPool[Connection] | None = None
        self._debug = not settings.is_production

    @property
    def pool(self) -> psycopg_pool.ConnectionPool[Connection]:
        """The underlying pool; raises ``ServiceUnavailable`` before :meth:`open`."""
        if self._pool is None:
            raise ServiceUnavailable("database: the runtime is not started", service="database")
        return self._pool

    def open(self, *, wait: bool = True) -> None:
        """Open the pool (idempotent). With ``wait``, fail if no connection can be made.

        Raises:
            ServiceUnavailable: ``wait`` is true and the database does not answer in
                ``db_connect_timeout`` (plus a second).
        """
        if self._pool is not None:
            return
        s = self.settings
        pool: psycopg_pool.ConnectionPool[Connection] = psycopg_pool.ConnectionPool(
            s.database_url,
            connection_class=psycopg.Connection[DictRow],
            kwargs=sync_connect_kwargs(s),
            min_size=s.db_pool_min_size,
            max_size=s.db_pool_max_size,
            timeout=s.db_pool_timeout,
            configure=configure_connection,
            name="wis2l-core-sync",
            reconnect_timeout=float("inf"),
            open=False,
        )
        try:
            with map_errors():
                pool.open(wait=wait, timeout=s.db_connect_timeout + 1)
        except BaseException:
            pool.close()
            raise
        self._pool = pool

    def close(self, timeout: float = 5.0) -> None:
        """Close the pool (idempotent), waiting up to ``timeout`` for connections in use."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close(timeout=timeout)

    @contextmanager
    def connection(self, conn: Connection | None = None) -> Iterator[Connection]:
        """Yield ``conn`` if given (a caller's transaction), else a pooled connection.

        psycopg errors raised in the block leave it as wis2l-core errors.

        Raises:
            ServiceUnavailable: no free connection within ``db_pool_timeout``, or the pool
                is not open.
        """
        if conn is not None:
            with map_errors():
                yield conn
            return
        pool = self.pool
        with map_errors():
            borrowed = pool.getconn()
        try:
            with map_errors():
                yield borrowed
        finally:
            pool.putconn(borrowed)  # resets (rolls back) or replaces it as needed

    def run(
        self,
        query: Query,
        params: Mapping[str, Any],
        conn: Connection | None = None,
        *,
        many: bool = False,
    ) -> list[DictRow]:
        """Run a named query (prepared); return its rows (only the first unless ``many``).

        Raises:
            Wis2lError: the driver's error, translated (see ``map_errors``).
        """
        start = time.perf_counter()
        # The repositories' hot path: getconn/putconn without a context manager's cost.
        pool = self.pool if conn is None else None
        with map_errors():
            c: Connection = conn if conn is not None else self.pool.getconn()
            try:
                cur = c.execute(query.text, params, prepare=True)
                if many:
                    rows = cur.fetchall()
                else:
                    row = cur.fetchone()
                    rows = [] if row is None else [row]
            finally:
                if pool is not None:
                    pool.putconn(c)
        if self._debug:
            self.log_query(query, start)
        return rows

    def _borrow(self) -> AbstractContextManager[Connection]:
        return self.connection()

    def log_query(self, query: Statement, start: float, count: int = 1) -> None:
        """In development, log ``query``'s name and the time since ``start`` at DEBUG
        (never its parameters), as the asynchronous pool does."""
        if self._debug and log.isEnabledFor(logging.DEBUG):
            name, file = label(query)
            log.debug(
                "%s.%s took %.2f ms",
                file.removesuffix(".sql"),
                name,
                (time.perf_counter() - start) * 1000,
                extra={"query": name, "file": file, "count": count},
            )
