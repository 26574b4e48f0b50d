"""The PostgreSQL connection pool and the one place statements are executed.

Every repository call goes through :class:`Database`: it borrows a pooled connection (or
uses the caller's transaction), runs a named query from ``sql/queries`` as a prepared
statement, logs its name and duration in development, and turns psycopg errors into ours
(:func:`~wis2l_core.db.errors.map_errors`).

Borrowing is cancellation-safe: a connection always goes back to the pool, however many
times the borrowing task is cancelled. An idle connection is handed out and taken back
without psycopg_pool's lock when nothing else is going on (:class:`Pool`); everything else
(waiting, growing, resetting, replacing a broken connection) is psycopg_pool's own code,
run in a task of its own that a cancellation of the borrower cannot interrupt.

After a failover (a primary killed, a standby promoted) the pool never hands a dead
connection out twice: the first call that fails on a lost connection (closed or broken, a
server shutting down, or a server that became read-only) discards every connection made
before it (psycopg_pool's ``drain``), and the pool reconnects at once, retrying every
:data:`RECONNECT_DELAY` seconds instead of psycopg_pool's exponential back-off, and never
giving up.

While the database cannot be reached (the pool's last attempt to connect failed and no
connection is idle), a borrow fails at once with ``ServiceUnavailable(service="database")``
instead of waiting ``db_pool_timeout`` for a connection that cannot come. The outage is
logged once when it begins (a warning with the reason) and once when it ends (info);
psycopg_pool's warning per failed attempt (four a second) is left out.

Behind a transaction-mode pooler (``WIS2L_DB_PREPARED_STATEMENTS=false``) nothing is
prepared on the server: the connections get ``prepare_threshold=None``, which turns every
``prepare=True`` of the library into a plain extended-protocol statement.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Coroutine, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import Any

import orjson
import psycopg
import psycopg_pool
from psycopg import errors as pg
from psycopg.rows import DictRow
from psycopg.types.json import set_json_dumps, set_json_loads

from wis2l_core._outage import Outage
from wis2l_core._secrets import scrub, secrets_in
from wis2l_core.config import Settings
from wis2l_core.db._pool_internals import PoolInternals, unfinished
from wis2l_core.db.connect import connect_kwargs
from wis2l_core.db.errors import map_errors
from wis2l_core.db.queries import QueryMethods, Statement, label
from wis2l_core.db.sql import Query
from wis2l_core.errors import ServiceUnavailable
from wis2l_core.telemetry._pool import waiting, watch

__all__ = ["RECONNECT_DELAY", "Connection", "Database", "Pool"]

Connection = psycopg.AsyncConnection[DictRow]
"""A psycopg connection whose rows are dicts."""

log = logging.getLogger("wis2l_core.db")


def _json_dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


async def configure_connection(conn: Connection) -> None:
    """Set up a new connection: orjson for JSON/JSONB both ways."""
    set_json_dumps(_json_dumps, conn)
    set_json_loads(orjson.loads, conn)


RECONNECT_DELAY = 0.25
"""Seconds between the pool's attempts to replace a lost connection while the database
is down (psycopg_pool's own back-off doubles from 1 s up to minutes, which kept a
promoted standby waiting)."""

_FIRST_ANSWER_POLL = 0.01
"""Seconds between looks at a starting pool (:meth:`Database.first_answer`)."""

_REFUSED = "unsupported startup parameter: options"
"""PgBouncer's answer to a startup parameter it does not know."""

# SQLSTATEs after which the connection's server is gone or no longer the primary:
# admin/crash shutdown, cannot connect now, read-only transaction (a standby).
_LOST_STATES = frozenset({"57P01", "57P02", "57P03", "25006"})


def _lost(conn: Connection, exc: BaseException) -> bool:
    """True if ``exc`` on ``conn`` means the server behind the pool is gone or demoted."""
    if conn.closed or conn.broken:
        return True
    cause = exc if isinstance(exc, psycopg.Error) else exc.__cause__
    if not isinstance(cause, psycopg.Error):
        return False
    state = cause.sqlstate or ""
    return state in _LOST_STATES or state.startswith("08") or isinstance(cause, pg.AdminShutdown)


_ATTEMPTING: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "wis2l_pool_attempting", default=False
)
"""True inside one of our pools' connection attempts (psycopg_pool's worker task)."""


def _not_an_attempt_warning(record: logging.LogRecord) -> bool:
    """A filter on ``psycopg.pool``: drop its "error connecting" warning for our pools.

    They log the outage once themselves (:class:`~wis2l_core._outage.Outage`); other
    pools in the process keep psycopg_pool's warnings.
    """
    return not (_ATTEMPTING.get() and record.msg == "error connecting in %r: %s")


def _quiet_attempt_warnings() -> None:
    psycopg_log = logging.getLogger("psycopg.pool")
    if _not_an_attempt_warning not in psycopg_log.filters:
        psycopg_log.addFilter(_not_an_attempt_warning)


class Pool(PoolInternals):
    """psycopg_pool's pool with a lock-free fast path for an idle connection.

    When a connection is idle in the pool and nobody holds the pool's lock or waits,
    :meth:`take_idle` hands it out and :meth:`put_idle` takes a clean one back without
    the lock and condition round trip of ``getconn``/``putconn``: in asyncio nothing
    else runs between the check and the move, so this is what the locked path would do.
    Every other case (no idle connection, clients waiting, a connection check or reset
    configured, a connection past its lifetime or in a transaction) returns ``None`` or
    ``False`` and the caller uses psycopg_pool's own ``getconn``/``putconn``. (Both, and
    every other use of psycopg_pool's private parts, are in
    :mod:`wis2l_core.db._pool_internals`.)

    :meth:`connection` is psycopg_pool's context manager made cancellation-safe (see
    :meth:`Database.connection`).

    A connection that could not be made is retried every :data:`RECONNECT_DELAY` seconds
    (until ``reconnect_timeout``: :class:`Database` makes it endless), and
    :meth:`discard_stale` throws away every connection made before a lost one.

    :attr:`outage` follows the attempts to connect: :meth:`refuse_if_down` fails a borrow
    at once while the last one failed and no connection is idle.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outage = Outage("database", log)
        self.fail_fast = False
        """Whether :meth:`refuse_if_down` refuses (``Settings.db_fail_fast``)."""
        self.connected_once = False
        """True once a connection was made."""
        _quiet_attempt_warnings()

    @contextmanager
    def attempting(self) -> Iterator[None]:
        """Marks psycopg_pool's warning about a failed attempt as ours to drop."""
        token = _ATTEMPTING.set(True)
        try:
            yield
        finally:
            _ATTEMPTING.reset(token)

    async def getconn(self, timeout: float | None = None) -> Connection:
        """psycopg_pool's borrow (no idle connection at hand: it may wait), in a
        ``db.client.connection.wait`` span when an SDK records."""
        with waiting(self):
            return await super().getconn(timeout)

    def retry_delay(self, delay: float) -> float:
        """Reconnect attempts at most ``RECONNECT_DELAY`` apart."""
        return min(delay, self.jitter(RECONNECT_DELAY, -0.2, 0.0))

    async def new_connection(self, timeout: float | None) -> Connection:
        """A new connection for the pool; a failure starts (or continues) the outage."""
        try:
            conn = await self._connect_once(timeout)
        except Exception as exc:
            if not self.closed:
                self.outage.failed(
                    exc,
                    "database unreachable%s: %s; %s while the pool reconnects every %g s",
                    "" if self.connected_once else " at start",
                    self.reason(exc),
                    "calls fail at once with ServiceUnavailable"
                    if self.fail_fast
                    else "calls wait for a connection",
                    RECONNECT_DELAY,
                )
            raise
        self.connected_once = True
        self.outage.recovered()
        return conn

    def reason(self, exc: BaseException) -> str:
        """``exc``'s text on one line, without the secrets of the pool's URL."""
        conninfo = self.conninfo if isinstance(self.conninfo, str) else ""
        return scrub(" ".join(str(exc).split()), secrets_in([conninfo])) or type(exc).__name__

    def refuse_if_down(self) -> None:
        """Fail at once while the database is known to be unreachable.

        That is, with :attr:`fail_fast`, while the pool's last attempt to connect failed
        and no connection is idle: waiting ``timeout`` for a connection that cannot come
        would only delay the answer. Without it a call waits, so it rides through a
        failover. The pool keeps reconnecting in the background; the first connection it
        makes ends this.

        Raises:
            ServiceUnavailable: ``service="database"``, with the last attempt's reason.
        """
        outage = self.outage
        if not self.fail_fast or outage.started is None or self.has_idle() or self.closed:
            return
        error = outage.error
        reason = "no connection" if error is None else self.reason(error)
        raise ServiceUnavailable(
            f"database unreachable: {reason} (retrying in the background)", service="database"
        ) from error

    async def _connect_once(self, timeout: float | None) -> Connection:
        # A pooler that refuses the statement-timeout startup option (PgBouncer without
        # ``options`` in ``ignore_startup_parameters``) would refuse every connection:
        # leave the option out from then on, and say where the timeout belongs.
        try:
            return await self.driver_connect(timeout)
        except psycopg.OperationalError as exc:
            kwargs = self.kwargs
            if not isinstance(kwargs, dict) or "options" not in kwargs or _REFUSED not in str(exc):
                raise
            log.warning(
                "the database (a pooler such as PgBouncer?) refused the statement_timeout"
                " startup option; connecting without it: set statement_timeout on the role"
                " (ALTER ROLE ... SET statement_timeout), or set DATABASE_DIRECT_URL",
                extra={"service": "database"},
            )
            self.kwargs = {k: v for k, v in kwargs.items() if k != "options"}
            return await self.driver_connect(timeout)

    def discard_stale(self, lost: Connection) -> Coroutine[Any, Any, None] | None:
        """``lost`` failed with its server gone: discard it and every older connection.

        Synchronous, so no other task is handed an idle connection in between: every
        connection made so far is marked stale (those in use are closed when they come
        back) and the idle ones are taken out of the pool at once. A connection made
        after the last discard is what tells this failure from one already handled, so a
        burst of failures discards once.

        Returns:
            The rest of the work, to await (closing the idle connections and opening
            their replacements), or ``None`` if this failure was already handled.
        """
        if self.closed or self.made_before_drain(lost):
            return None
        # INFO: if the server is gone, the failed reconnection logs the outage (once).
        log.info("database connection lost; discarding the pool's connections and reconnecting")
        return self.drain_at_once()

    @asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[Connection]:
        """Borrow a connection for the block; it goes back even if the task is cancelled.

        Raises:
            ServiceUnavailable: the database is known to be unreachable (:meth:`refuse_if_down`).
        """
        conn = self.take_idle()
        if conn is None:
            self.refuse_if_down()
            conn = await self.getconn(timeout)
        try:
            yield conn
        except BaseException as exc:
            await _give_back(self, conn, exc)
            raise
        await _give_back(self, conn, None)


_returning: set[asyncio.Task[None]] = set()  # strong references to the return tasks


async def _putconn(pool: Pool, conn: Connection, discard: bool) -> None:
    try:
        if discard or unfinished(conn):
            # Interrupted in an unknown state (statement, pipeline, transaction block or
            # prepared-statement bookkeeping cut short): close it, never reuse it.
            await conn.close()
            if pool.closed:
                return
            log.debug("closed a connection interrupted mid-use; the pool replaces it")
            await pool.put_back_lost(conn)
        else:
            await pool.putconn(conn)  # resets (rolls back) or replaces it as needed
    except Exception:  # a return must never fail the caller; the pool heals itself
        log.warning("could not return a connection to the pool", exc_info=True)


async def _return(pool: Pool, conn: Connection, discard: bool) -> None:
    """Give ``conn`` back in a task of its own: a cancellation of the caller cannot stop it.

    If the caller is cancelled while waiting, the return still completes and the
    cancellation propagates.
    """
    task = asyncio.ensure_future(_putconn(pool, conn, discard))
    _returning.add(task)
    task.add_done_callback(_returning.discard)
    await asyncio.shield(task)


async def _give_back(
    pool: Pool, conn: Connection, exc: BaseException | None, *, discard: bool = False
) -> None:
    """Return ``conn`` after a borrow that ended with ``exc`` (``None``: it went well).

    Closed instead of reused when ``discard`` or cancelled; after a lost connection the
    pool's older connections go too (a failover: they are as dead as this one)."""
    if discard or isinstance(exc, asyncio.CancelledError):
        await _return(pool, conn, discard=True)
        return
    if exc is not None and _lost(conn, exc) and (rest := pool.discard_stale(conn)) is not None:
        await _shielded(rest)
    if conn.closed or conn.broken:  # replaced quietly (putconn warns about each one)
        await _return(pool, conn, discard=True)
        return
    if not pool.put_idle(conn):
        await _return(pool, conn, discard=False)


async def _shielded(aw: Awaitable[None]) -> None:
    """Run ``aw`` in a task a cancellation of the caller cannot interrupt; log its failure."""
    task = asyncio.ensure_future(aw)
    _returning.add(task)
    task.add_done_callback(_returning.discard)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.warning("could not discard the pool's connections", exc_info=True)


class Database(QueryMethods):
    """An :class:`~psycopg_pool.AsyncConnectionPool` and query execution over it.

    Besides what the repositories use, it runs an app's own SQL on a pooled connection:
    :meth:`fetch_one`, :meth:`fetch_all`, :meth:`fetch_val` and :meth:`execute`, and
    :meth:`to_arrow` for a whole result as a ``pyarrow.Table`` (see
    :class:`~wis2l_core.db.queries.QueryMethods`). No I/O happens until :meth:`open`.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pool: Pool | None = None
        self._debug = not settings.is_production
        # Connections a cancellation interrupted inside a caller's transaction: closed,
        # never reused, when that transaction's borrow ends.
        self._tainted: weakref.WeakSet[Connection] = weakref.WeakSet()

    @property
    def pool(self) -> Pool:
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
        pool = Pool(
            self.settings.database_url,
            kwargs=connect_kwargs(self.settings),
            min_size=self.settings.db_pool_min_size,
            max_size=self.settings.db_pool_max_size,
            timeout=self.settings.db_pool_timeout,
            configure=configure_connection,
            name="wis2l-core",
            # Never give up reconnecting: the background attempts end an outage.
            reconnect_timeout=float("inf"),
            open=False,
        )
        pool.fail_fast = self.settings.db_fail_fast
        timeout = self.settings.db_connect_timeout + 1
        try:
            with map_errors():
                await pool.open(wait=wait, timeout=timeout)
        except BaseException as exc:
            await pool.close()
            if isinstance(exc, ServiceUnavailable) and isinstance(
                exc.__cause__, psycopg_pool.PoolTimeout
            ):
                raise ServiceUnavailable(
                    f"database unavailable: no connection within {timeout:g} s ({exc.__cause__})",
                    service="database",
                ) from exc.__cause__
            raise
        self._pool = pool
        watch(pool)

    @property
    def down(self) -> bool:
        """True while the pool's last attempt to connect failed (the outage is logged)."""
        return self._pool is not None and self._pool.outage.down

    async def first_answer(self, timeout: float) -> bool:
        """After ``open(wait=False)``: wait for the pool's first connection or failure.

        Returns:
            ``True`` once a connection is made; ``False`` as soon as an attempt fails (the
            outage is logged once, and the pool keeps trying) or after ``timeout`` seconds.
        """
        pool = self.pool
        deadline = time.monotonic() + timeout
        while not pool.outage.down and time.monotonic() < deadline:
            if pool.connected_once:
                return True
            await asyncio.sleep(_FIRST_ANSWER_POLL)
        return pool.connected_once and not pool.outage.down

    async def close(self, timeout: float = 5.0) -> None:
        """Close the pool (idempotent), waiting up to ``timeout`` for connections in use."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close(timeout=timeout)

    @asynccontextmanager
    async def connection(self, conn: Connection | None = None) -> AsyncIterator[Connection]:
        """Yield ``conn`` if given (a caller's transaction), else a pooled connection.

        A pooled connection always goes back to the pool: the return runs in a task of its
        own (a second cancellation cannot interrupt it), and a connection whose user was
        cancelled mid-use is closed and replaced rather than reused in an unknown state.

        psycopg errors raised in the block leave it as wis2l-core errors (``map_errors``).

        Raises:
            ServiceUnavailable: no free connection within ``db_pool_timeout``, the pool is
                not open, or the database cannot be reached (at once while the pool knows
                it is down: its last attempt to connect failed and no connection is idle).
        """
        if conn is not None:
            try:
                with map_errors():
                    yield conn
            except asyncio.CancelledError:
                self._tainted.add(conn)
                raise
            return
        pool = self.pool
        borrowed = pool.take_idle()
        if borrowed is None:
            pool.refuse_if_down()
            with map_errors():
                borrowed = await pool.getconn()
        try:
            with map_errors():
                yield borrowed
        except BaseException as exc:
            await _give_back(pool, borrowed, exc, discard=self._untaint(borrowed))
            raise
        await _give_back(pool, borrowed, None, discard=self._untaint(borrowed))

    def interrupted(self, conn: Connection) -> bool:
        """True if a cancellation cut a statement on ``conn`` (a caller's transaction) short.

        ``wis.transaction()`` rolls back instead of committing such a transaction, and its
        connection is closed rather than reused.
        """
        return conn in self._tainted

    def _untaint(self, conn: Connection) -> bool:
        """Whether a cancellation cut a statement on ``conn`` short; forgets it."""
        if conn in self._tainted:
            self._tainted.discard(conn)
            return True
        return False

    async def run(
        self,
        query: Query,
        params: Mapping[str, Any],
        conn: Connection | None = None,
        *,
        many: bool = False,
    ) -> list[DictRow]:
        """Run a named query (prepared); return its rows (only the first unless ``many``).

        The repositories' path: on ``conn`` when given, else on a pooled connection,
        borrowed and returned without a context manager's overhead.

        Raises:
            Wis2lError: the driver's error, translated (see ``map_errors``).
        """
        start = time.perf_counter()
        if conn is not None:
            try:
                with map_errors():
                    cur = await conn.execute(query.text, params, prepare=True)
                    rows = await cur.fetchall() if many else _first(await cur.fetchone())
            except asyncio.CancelledError:
                self._tainted.add(conn)
                raise
        else:
            pool = self.pool
            borrowed = pool.take_idle()
            try:
                with map_errors():
                    if borrowed is None:
                        pool.refuse_if_down()
                        borrowed = await pool.getconn()
                    cur = await borrowed.execute(query.text, params, prepare=True)
                    rows = await cur.fetchall() if many else _first(await cur.fetchone())
            except BaseException as exc:
                if borrowed is not None:
                    await _give_back(pool, borrowed, exc)
                raise
            if not pool.put_idle(borrowed):
                await _return(pool, borrowed, discard=False)
        if self._debug:
            self.log_query(query, start)
        return rows

    def _borrow(self) -> AbstractAsyncContextManager[Connection]:
        return self.connection()

    def log_query(self, query: Statement, start: float, count: int = 1) -> None:
        """In development, log ``query``'s name and the time since ``start`` at DEBUG.

        Only the query's name and file are logged (for your own SQL: its first keyword
        and a digest of its text), never its parameters: they may hold secrets or
        personal data.
        """
        if self._debug and log.isEnabledFor(logging.DEBUG):
            name, file = label(query)
            log.debug(
                "%s.%s took %.2f ms",
                file.removesuffix(".sql"),
                name,
                (time.perf_counter() - start) * 1000,
                extra={"query": name, "file": file, "count": count},
            )


def _first(row: DictRow | None) -> list[DictRow]:
    return [] if row is None else [row]
