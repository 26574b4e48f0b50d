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

``wis.transaction()`` (and a repository write that opens a transaction of its own) is a
``transaction`` span around its statements (:func:`transaction_span`). The pool's own
telemetry (waiting for a connection, the gauges) is in :mod:`wis2l_core.telemetry._pool`.
"""

from __future__ import annotations

import contextlib
import functools
import time
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import attrs
import psycopg

from wis2l_core.config import SqlComments
from wis2l_core.telemetry._core import DB_DURATION, meter, record_error, tracer
from wis2l_core.telemetry._pool import POOL_INSTRUMENTS, POSTGRESQL
from wis2l_core.telemetry._sql import QueryText, describe

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

__all__ = ["TracedCursor", "cursor_class", "transaction_span"]

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
        POOL_INSTRUMENTS.get()  # the pool gauges start reporting once a meter is set
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
# Transactions


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
