"""PostgreSQL spans and metrics: one cursor class on every connection the library makes.

:func:`cursor_class` is the ``cursor_factory`` of every connection (the pool's and the
one-off ones, :func:`~wis2l_core.db.connect.connect_kwargs`), so every statement run on
them, through a repository, ``wis.database.fetch_one``, a generated function or psycopg
by hand, passes its ``execute``:

- With no SDK (:func:`~wis2l_core.telemetry._core.tracer` and ``meter()`` are ``None``)
  it hands the call to psycopg's own ``execute`` and returns its coroutine: no extra
  await, no allocation (a named query gets its SQL comment first, when asked).
- Otherwise the statement is a span named by its ``db.query.summary``: a named query's
  ``<file stem>.<query name>``, known from its text (a
  :class:`~wis2l_core.telemetry._sql.QueryText`) without parsing; other SQL is
  summarised once as ``<operation> <table>`` (``SELECT users``). Its duration goes to
  ``db.client.operation.duration``. Parameter values are never recorded; the SQL only
  when asked (``WIS2L_OTEL_DB_QUERY_TEXT``).

In a pipeline (the repositories' writes) ``execute`` only queues the statement: its span
ends when psycopg hands the cursor its results (``_check_results``, psycopg's one hook
for it), so the duration and a failure belong to the statement that caused them.

The pool adds a span while a borrow waits for a connection (:func:`waiting`),
``db.client.connection.*`` gauges read from psycopg_pool's ``get_stats()`` at collection
time (:func:`watch`), and ``wis.transaction()`` a ``transaction`` span around its
statements (:func:`transaction_span`).
"""

from __future__ import annotations

import contextlib
import functools
import time
import weakref
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import attrs
import psycopg
from psycopg import conninfo as pg_conninfo

from wis2l_core.config import SqlComments
from wis2l_core.telemetry._core import DB_DURATION, Instruments, meter, record_error, tracer
from wis2l_core.telemetry._sql import QueryText, describe

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Histogram, Meter, Observation
    from opentelemetry.trace import Span, Tracer
    from psycopg_pool import AsyncConnectionPool

__all__ = [
    "POSTGRESQL",
    "TracedCursor",
    "cursor_class",
    "transaction_span",
    "waiting",
    "watch",
]

POSTGRESQL = "postgresql"
"""``db.system.name`` of every span and measurement here."""

_NULL: contextlib.nullcontext[None] = contextlib.nullcontext()

# ---------------------------------------------------------------------------------------
# The cursor


@attrs.frozen
class _Statement:
    """What a span and a measurement say about one statement (made once per text)."""

    name: str
    attributes: dict[str, Any]


def _about(text: str, summary: str | None) -> _Statement:
    operation, collection = describe(text)
    if summary is None:
        summary = " ".join(x for x in (operation, collection) if x) or POSTGRESQL
    attributes: dict[str, Any] = {"db.query.summary": summary}
    if operation is not None:
        attributes["db.operation.name"] = operation
    if collection is not None:
        attributes["db.collection.name"] = collection
    return _Statement(summary, attributes)


@functools.lru_cache(maxsize=1024)
def _adhoc(text: str) -> _Statement:
    return _about(text, None)


def _statement(query: Any, cur: psycopg.AsyncCursor[Any]) -> tuple[_Statement, str | None]:
    """What ``query`` is, and its text (``None`` when it has none we can read)."""
    if type(query) is QueryText:
        known: _Statement | None = vars(query).get("_statement")
        if known is None:
            known = _about(query, query.summary)
            vars(query)["_statement"] = known
        return known, query
    if isinstance(query, bytes):
        query = query.decode(errors="replace")
    elif isinstance(query, psycopg.sql.Composable):
        query = query.as_string(cur)
    if isinstance(query, str):
        return _adhoc(query), query
    return _adhoc(""), None


_SERVERS: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def _server(conn: psycopg.AsyncConnection[Any]) -> dict[str, Any]:
    """``db.namespace``, ``server.address`` and ``server.port`` of ``conn`` (cached)."""
    found = _SERVERS.get(conn)
    if found is None:
        info = conn.info
        found = {
            "db.system.name": POSTGRESQL,
            "db.namespace": info.dbname,
            "server.address": info.host,
            "server.port": int(info.port),
        }
        _SERVERS[conn] = found
    return found


def _comment(query: QueryText) -> str:
    """``/* users.find_by_id */ <query>``: the same text every time (made once)."""
    text: str | None = vars(query).get("_commented")
    if text is None:
        text = vars(query)["_commented"] = f"/* {query.summary} */ {query}"
    return text


_Pending = tuple["Span | None", float, dict[str, Any]]


class TracedCursor(psycopg.AsyncCursor[Any]):
    """psycopg's cursor whose ``execute`` records a span and a duration (see the module).

    :func:`cursor_class` makes the variants a connection uses; this one records neither
    the SQL text nor a comment.
    """

    __slots__ = ("_wis2l_pending",)
    _wis2l_pending: _Pending | None

    query_text = False
    """Record ``db.query.text`` (``WIS2L_OTEL_DB_QUERY_TEXT``)."""
    comments = SqlComments.OFF
    """The SQL comment before a named query (``WIS2L_SQL_COMMENTS``)."""

    def execute(
        self,
        query: Any,
        params: Any = None,
        *,
        prepare: bool | None = None,
        binary: bool | None = None,
    ) -> Any:
        """psycopg's ``execute``, in a span when an SDK records (awaitable, returns the cursor)."""
        spans = tracer()
        if spans is None and meter() is None:
            if self.comments is not SqlComments.OFF and type(query) is QueryText:
                query = _comment(query)
            return psycopg.AsyncCursor.execute(self, query, params, prepare=prepare, binary=binary)
        return self._traced(spans, query, params, prepare, binary)

    async def _traced(
        self,
        spans: Tracer | None,
        query: Any,
        params: Any,
        prepare: bool | None,
        binary: bool | None,
    ) -> TracedCursor:
        conn = self._conn
        statement, text = _statement(query, self)
        attributes = {**_server(conn), **statement.attributes}
        span = None
        if spans is not None:
            from opentelemetry.trace import SpanKind

            span = spans.start_span(
                statement.name,
                kind=SpanKind.CLIENT,
                attributes=attributes
                if text is None or not self.query_text
                else {**attributes, "db.query.text": text},
            )
        if self.comments is not SqlComments.OFF and type(query) is QueryText:
            query, prepare = _commented(query, span, self.comments, prepare)
        _POOL.get()  # the pool gauges start reporting once a meter is set
        start = time.perf_counter()
        pipelined = conn._pipeline is not None
        if pipelined:  # queued: the span ends with the results (maybe before we resume)
            self._wis2l_pending = (span, start, attributes)
        try:
            await psycopg.AsyncCursor.execute(self, query, params, prepare=prepare, binary=binary)
        except BaseException as exc:
            if not pipelined or self._wis2l_pending is not None:
                self._wis2l_pending = None
                _finish(span, start, attributes, exc)
            raise
        if not pipelined:
            _finish(span, start, attributes, None)
        return self

    def _check_results(self, results: Any) -> None:
        pending: _Pending | None = getattr(self, "_wis2l_pending", None)
        if pending is None:
            super()._check_results(results)
            return
        self._wis2l_pending = None
        try:
            super()._check_results(results)
        except BaseException as exc:
            _finish(*pending, exc)
            raise
        _finish(*pending, None)


def _commented(
    query: QueryText, span: Span | None, comments: SqlComments, prepare: bool | None
) -> tuple[str, bool | None]:
    """The text to send, and whether to prepare it (never a per-call text)."""
    if comments is SqlComments.TRACEPARENT and span is not None:
        context = span.get_span_context()
        if context.is_valid:
            parent = f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
            return f"/* {query.summary} traceparent='{parent}' */ {query}", False
    return _comment(query), prepare


def _finish(
    span: Span | None, start: float, attributes: dict[str, Any], exc: BaseException | None
) -> None:
    seconds = time.perf_counter() - start
    if exc is not None:
        attributes = {**attributes, "error.type": type(exc).__qualname__}
        state = getattr(exc, "sqlstate", None)
        if state:
            attributes["db.response.status_code"] = state
    duration = DB_DURATION.get()
    if duration is not None:
        duration.record(seconds, attributes)
    if span is not None:
        if exc is not None:
            if "db.response.status_code" in attributes:
                span.set_attribute("db.response.status_code", attributes["db.response.status_code"])
            record_error(span, exc)
        span.end()


@functools.cache
def cursor_class(query_text: bool, comments: SqlComments) -> type[TracedCursor]:
    """The cursor class of a connection with these settings (one class per pair).

    Args:
        query_text: record the SQL as ``db.query.text`` (``WIS2L_OTEL_DB_QUERY_TEXT``).
        comments: the SQL comment before a named query (``WIS2L_SQL_COMMENTS``).
    """
    if not query_text and comments is SqlComments.OFF:
        return TracedCursor
    name = f"TracedCursor_{int(query_text)}_{comments.value}"
    made: type[TracedCursor] = type(
        name, (TracedCursor,), {"__slots__": (), "query_text": query_text, "comments": comments}
    )
    return made


# ---------------------------------------------------------------------------------------
# Transactions and waiting for a connection


def transaction_span() -> contextlib.AbstractContextManager[object]:
    """A ``transaction`` span, current for the block (statements in it are its children).

    Nothing at all when no SDK records spans.
    """
    spans = tracer()
    if spans is None:
        return _NULL
    return _transaction(spans)


@contextlib.contextmanager
def _transaction(spans: Tracer) -> Iterator[Span]:
    from opentelemetry.trace import SpanKind, use_span

    span = spans.start_span(
        "transaction", kind=SpanKind.CLIENT, attributes={"db.system.name": POSTGRESQL}
    )
    with use_span(span, end_on_exit=True, record_exception=False, set_status_on_exception=False):
        try:
            yield span
        except BaseException as exc:
            record_error(span, exc)
            raise


@attrs.frozen
class _PoolInstruments:
    wait_time: Histogram
    observables: tuple[object, ...]


_POOLS: weakref.WeakKeyDictionary[AsyncConnectionPool[Any], str] = weakref.WeakKeyDictionary()


def pool_name(pool: AsyncConnectionPool[Any]) -> str:
    """``db.client.connection.pool.name``: ``<host>:<port>/<database>`` of the pool's URL."""
    name = _POOLS.get(pool)
    if name is not None:
        return name
    try:
        info = pg_conninfo.conninfo_to_dict(pool.conninfo if isinstance(pool.conninfo, str) else "")
    except psycopg.ProgrammingError:
        return pool.name
    host = info.get("host") or "localhost"
    return f"{host}:{info.get('port') or 5432}/{info.get('dbname') or ''}"


def _stats(attribute: str) -> Iterable[tuple[AsyncConnectionPool[Any], str, dict[str, int]]]:
    for pool, name in list(_POOLS.items()):
        if not pool.closed:
            yield pool, name, pool.get_stats()


def _count(options: CallbackOptions) -> Iterable[Observation]:
    from opentelemetry.metrics import Observation

    for _pool, name, stats in _stats("count"):
        idle = stats.get("pool_available", 0)
        used = max(stats.get("pool_size", 0) - idle, 0)
        yield Observation(idle, _pool_attributes(name, "idle"))
        yield Observation(used, _pool_attributes(name, "used"))


def _gauge(key: str) -> Any:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        for _pool, name, stats in _stats(key):
            yield Observation(stats.get(key, 0), _pool_attributes(name))

    return observe


def _pool_attributes(name: str, state: str | None = None) -> dict[str, str]:
    found = {"db.system.name": POSTGRESQL, "db.client.connection.pool.name": name}
    if state is not None:
        found["db.client.connection.state"] = state
    return found


def _pool_instruments(m: Meter) -> _PoolInstruments:
    return _PoolInstruments(
        wait_time=m.create_histogram(
            "db.client.connection.wait_time",
            unit="s",
            description="The time it took to obtain a connection from the pool.",
            explicit_bucket_boundaries_advisory=(0.0, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0),
        ),
        observables=(
            m.create_observable_up_down_counter(
                "db.client.connection.count",
                [_count],
                unit="{connection}",
                description="The number of connections in the pool, by state (idle, used).",
            ),
            m.create_observable_up_down_counter(
                "db.client.connection.max",
                [_gauge("pool_max")],
                unit="{connection}",
                description="The maximum number of open connections allowed.",
            ),
            m.create_observable_up_down_counter(
                "db.client.connection.pending_requests",
                [_gauge("requests_waiting")],
                unit="{request}",
                description="The number of borrows waiting for a connection.",
            ),
            m.create_observable_counter(
                "db.client.connection.timeouts",
                [_gauge("requests_errors")],
                unit="{timeout}",
                description="Borrows that timed out waiting for a connection.",
            ),
        ),
    )


_POOL: Instruments[_PoolInstruments] = Instruments(_pool_instruments)


def watch(pool: AsyncConnectionPool[Any]) -> None:
    """Report ``pool`` in the ``db.client.connection.*`` metrics while it is open.

    Its ``db.client.connection.pool.name`` is ``<host>:<port>/<database>``, with ``#2``,
    ``#3`` ... after it for a second or third open pool of the same database.
    """
    base = name = pool_name(pool)
    taken = {v for p, v in list(_POOLS.items()) if not p.closed}
    count = 1
    while name in taken:
        count += 1
        name = f"{base}#{count}"
    _POOLS[pool] = name
    _POOL.get()


def waiting(pool: AsyncConnectionPool[Any]) -> contextlib.AbstractContextManager[object]:
    """Around a borrow that waits on psycopg_pool (no idle connection at hand): a
    ``db.client.connection.wait`` span and a ``db.client.connection.wait_time`` value.

    Nothing at all when no SDK records.
    """
    spans = tracer()
    instruments = _POOL.get()
    if spans is None and instruments is None:
        return _NULL
    return _waiting(spans, instruments, pool)


@contextlib.contextmanager
def _waiting(
    spans: Tracer | None, instruments: _PoolInstruments | None, pool: AsyncConnectionPool[Any]
) -> Iterator[None]:
    attributes = _pool_attributes(_POOLS.get(pool) or pool_name(pool))
    span = None
    if spans is not None:
        from opentelemetry.trace import SpanKind

        span = spans.start_span(
            "db.client.connection.wait", kind=SpanKind.INTERNAL, attributes=attributes
        )
    start = time.perf_counter()
    try:
        yield
    except BaseException as exc:
        if span is not None:
            record_error(span, exc)
        raise
    finally:
        if instruments is not None:
            instruments.wait_time.record(time.perf_counter() - start, attributes)
        if span is not None:
            span.end()
