"""The PostgreSQL connection pool and the one place statements are executed.

Every repository call goes through :class:`Database`: it picks a pooled connection (or the
caller's transaction), runs a named query from ``sql/queries`` as a prepared statement,
logs its name and duration in development, and turns psycopg errors into ours.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson
import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import set_json_dumps, set_json_loads
from psycopg_pool import AsyncConnectionPool

from wis2l_core.config import Settings
from wis2l_core.db.errors import translate
from wis2l_core.db.sql import Query
from wis2l_core.errors import ServiceUnavailable

__all__ = ["Connection", "Database"]

Connection = psycopg.AsyncConnection[DictRow]
"""A psycopg connection whose rows are dicts."""

log = logging.getLogger("wis2l_core.db")


def _json_dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


async def configure_connection(conn: Connection) -> None:
    """Set up a new connection: orjson for JSON/JSONB both ways."""
    set_json_dumps(_json_dumps, conn)
    set_json_loads(orjson.loads, conn)


def connect_kwargs(settings: Settings) -> dict[str, Any]:
    """Connection keyword arguments shared by the pool and one-off connections."""
    options = []
    if settings.db_statement_timeout > 0:
        options.append(f"-c statement_timeout={int(settings.db_statement_timeout * 1000)}")
    return {
        "row_factory": dict_row,
        # Reads are one statement: autocommit saves the BEGIN/COMMIT round trips.
        # Writes open explicit transactions (see repository.py).
        "autocommit": True,
        "connect_timeout": max(1, round(settings.db_connect_timeout)),
        "application_name": "wis2l-core",
        "options": " ".join(options),
    }


class Database:
    """An :class:`~psycopg_pool.AsyncConnectionPool` and query execution over it.

    No I/O happens until :meth:`open`.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pool: AsyncConnectionPool[Connection] | None = None
        self._debug = not settings.is_production

    @property
    def pool(self) -> AsyncConnectionPool[Connection]:
        """The underlying pool; raises ``ServiceUnavailable`` before :meth:`open`."""
        if self._pool is None:
            raise ServiceUnavailable("database: the runtime is not started", service="database")
        return self._pool

    async def open(self, *, wait: bool = True) -> None:
        """Open the pool. With ``wait``, fail fast if no connection can be made.

        Raises:
            ServiceUnavailable: ``wait`` is true and the database does not answer.
        """
        if self._pool is not None:
            return
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            self.settings.database_url,
            kwargs=connect_kwargs(self.settings),
            min_size=self.settings.db_pool_min_size,
            max_size=self.settings.db_pool_max_size,
            timeout=self.settings.db_pool_timeout,
            configure=configure_connection,
            name="wis2l-core",
            open=False,
        )
        try:
            await pool.open(wait=wait, timeout=self.settings.db_connect_timeout + 1)
        except Exception as exc:
            await pool.close()
            raise ServiceUnavailable(f"database unavailable: {exc}", service="database") from exc
        self._pool = pool

    async def close(self, timeout: float = 5.0) -> None:
        """Close the pool (idempotent), waiting up to ``timeout`` for connections in use."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close(timeout=timeout)

    @asynccontextmanager
    async def connection(self, conn: Connection | None = None) -> AsyncIterator[Connection]:
        """Yield ``conn`` if given (a caller's transaction), else a pooled connection."""
        if conn is not None:
            yield conn
            return
        try:
            async with self.pool.connection() as pooled:
                yield pooled
        except psycopg.Error as exc:
            raise translate(exc) from exc
        except Exception as exc:
            if type(exc).__module__.startswith("psycopg_pool"):
                raise translate(exc) from exc
            raise

    async def fetch_one(
        self, query: Query, params: dict[str, Any], conn: Connection | None = None
    ) -> DictRow | None:
        """Run ``query`` and return its first row, or ``None``."""
        async with self.connection(conn) as c:
            start = time.perf_counter()
            try:
                cur = await c.execute(query.text, params, prepare=True)
                row = await cur.fetchone()
            except psycopg.Error as exc:
                raise translate(exc) from exc
            self.log_query(query, start)
            return row

    async def fetch_all(
        self, query: Query, params: dict[str, Any], conn: Connection | None = None
    ) -> list[DictRow]:
        """Run ``query`` and return all its rows."""
        async with self.connection(conn) as c:
            start = time.perf_counter()
            try:
                cur = await c.execute(query.text, params, prepare=True)
                rows = await cur.fetchall()
            except psycopg.Error as exc:
                raise translate(exc) from exc
            self.log_query(query, start)
            return rows

    async def execute_many(
        self, query: Query, params_seq: Sequence[dict[str, Any]], conn: Connection | None = None
    ) -> list[DictRow]:
        """Run ``query`` once per parameter set in one pipelined batch; return every row."""
        async with self.connection(conn) as c:
            start = time.perf_counter()
            try:
                async with c.cursor() as cur:
                    await cur.executemany(query.text, params_seq, returning=True)
                    rows: list[DictRow] = []
                    while True:
                        rows.extend(await cur.fetchall())
                        if not cur.nextset():
                            break
            except psycopg.Error as exc:
                raise translate(exc) from exc
            self.log_query(query, start, count=len(params_seq))
            return rows

    def log_query(self, query: Query, start: float, count: int = 1) -> None:
        """In development, log ``query``'s name and the time since ``start`` at DEBUG.

        Only the query's name and file are logged, never its parameters (they may hold
        secrets or personal data).
        """
        if self._debug and log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s.%s took %.2f ms",
                query.file.removesuffix(".sql"),
                query.name,
                (time.perf_counter() - start) * 1000,
                extra={"query": query.name, "file": query.file, "count": count},
            )
