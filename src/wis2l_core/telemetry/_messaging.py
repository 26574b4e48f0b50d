"""NATS spans and metrics, and the trace context an event keeps through the outbox.

One trace through the outbox:

1. A repository write stores the context active then with its event row
   (:func:`current_context`, as ``events.trace_context``: ``<traceparent>[,<tracestate>]``).
2. The relay sends the row with W3C ``traceparent``/``tracestate`` headers and the
   CloudEvents distributed-tracing extension's ``ce-traceparent``/``ce-tracestate``
   carrying that stored context (:func:`trace_headers`, whether or not the relay's own
   process has an SDK); its ``send <subject>`` span *links* to it (a relay batch is a
   trace of its own, :class:`Sending`).
3. A subscriber's ``process <subject>`` span has the extracted context as its parent
   (:func:`processing`), so its handler, and the events the handler writes in turn,
   belong to the writer's trace.

``bus.publish`` (no database write) sends the context of its own ``send`` span, a child
of the current one. Every entry point here checks :func:`~wis2l_core.telemetry._core.tracer`
and :func:`~wis2l_core.telemetry._core.meter` first and does nothing more when both are
``None`` (no SDK).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from wis2l_core.telemetry._core import DURATION_BUCKETS, Instruments, tracer

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Counter, Histogram, Meter, Observation
    from opentelemetry.trace import Span, Tracer

try:
    from opentelemetry import trace as _trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    _W3C: TraceContextTextMapPropagator | None = TraceContextTextMapPropagator()
except ImportError:  # pragma: no cover - the telemetry extra is not installed
    _W3C = None

__all__ = [
    "Sending",
    "consumed",
    "current_context",
    "dead_lettered",
    "process_failed",
    "processing",
    "publishing",
    "relayed",
    "sending",
    "trace_headers",
    "watch_outbox",
]

SYSTEM = "nats"
TRACE_HEADERS = ("traceparent", "tracestate", "ce-traceparent", "ce-tracestate")
"""The trace headers a message carries; a dead-lettered copy keeps them."""
MAX_TRACESTATE = 512
"""The longest ``tracestate`` kept with an event (the W3C minimum a hop must pass on);
``events.trace_context`` holds at most 600 characters."""
GAUGE_REFRESH = 5.0
"""Seconds between two reads of the outbox backlog by the gauges (at most)."""
GAUGE_CAP = 100_000
"""Unpublished rows the backlog gauges look at, at most (the oldest ones)."""


# -- the context kept with an event ------------------------------------------------------


def current_context() -> str | None:
    """The active span's context as an event row keeps it: ``traceparent[,tracestate]``.

    ``None`` when no SDK is set (nothing is stored, whatever the context) or no valid
    span is active.
    """
    if tracer() is None:
        return None
    ctx = _trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    parent = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"
    state = ctx.trace_state.to_header() if ctx.trace_state else ""
    # A tracestate longer than the column keeps is dropped whole (W3C lets a hop drop it).
    return f"{parent},{state}" if state and len(state) <= MAX_TRACESTATE else parent


def trace_headers(stored: str, headers: dict[str, str]) -> None:
    """Add the headers of a stored context (``traceparent[,tracestate]``) to ``headers``:
    W3C ``traceparent``/``tracestate`` and CloudEvents ``ce-traceparent``/``ce-tracestate``."""
    parent, _, state = stored.partition(",")
    headers["traceparent"] = headers["ce-traceparent"] = parent
    if state:
        headers["tracestate"] = headers["ce-tracestate"] = state


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Header ``name`` (lower case), as sent or in any other case (NATS keeps the case)."""
    value = headers.get(name)
    if value is None:
        for key, found in headers.items():
            if key.lower() == name:
                return found
    return value


def _extract(headers: Mapping[str, str] | None) -> Any:
    """The context a message's headers carry (W3C first, then CloudEvents'), or ``None``."""
    if not headers or _W3C is None:
        return None
    parent = _header(headers, "traceparent") or _header(headers, "ce-traceparent")
    if not parent:
        return None
    carrier = {"traceparent": parent}
    state = _header(headers, "tracestate") or _header(headers, "ce-tracestate")
    if state:
        carrier["tracestate"] = state
    return _W3C.extract(carrier)


def _inject(span: Span, headers: dict[str, str]) -> None:
    ctx = span.get_span_context()
    if ctx.is_valid:
        parent = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"
        state = ctx.trace_state.to_header() if ctx.trace_state else ""
        trace_headers(f"{parent},{state}" if state else parent, headers)


def _link(stored: str) -> Any:
    """A span link to a stored context, or ``None`` when it does not parse.

    Parsed here rather than by the propagator (which builds a whole context): the relay
    makes one link per message.
    """
    fields = stored.partition(",")[0].split("-")
    if len(fields) != 4 or len(fields[1]) != 32 or len(fields[2]) != 16:
        return None
    try:
        ctx = _trace.SpanContext(
            trace_id=int(fields[1], 16),
            span_id=int(fields[2], 16),
            is_remote=True,
            trace_flags=_trace.TraceFlags(int(fields[3], 16) & 1),
        )  # no tracestate: a link identifies the span, the message carries the state
    except ValueError:
        return None
    return _trace.Link(ctx) if ctx.is_valid else None


# -- instruments ------------------------------------------------------------------------


@attrs.frozen
class _Messaging:
    duration: Histogram
    sent: Counter
    consumed: Counter
    process: Histogram
    latency: Histogram
    published: Counter
    dead: Counter

    @classmethod
    def make(cls, m: Meter) -> _Messaging:
        _register(m)  # the outbox gauges, with the first messaging instrument of a meter
        return cls(
            duration=m.create_histogram(
                "messaging.client.operation.duration",
                unit="s",
                description="Duration of messaging operations (a publish, until its ack).",
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
            ),
            sent=m.create_counter(
                "messaging.client.sent.messages",
                unit="{message}",
                description="Messages a producer attempted to send.",
            ),
            consumed=m.create_counter(
                "messaging.client.consumed.messages",
                unit="{message}",
                description="Messages delivered to a consumer.",
            ),
            process=m.create_histogram(
                "messaging.process.duration",
                unit="s",
                description="Duration of processing a message (the handler, its ack).",
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
            ),
            latency=m.create_histogram(
                "wis2l.outbox.publish_latency",
                unit="s",
                description="Seconds from an event's write to its acknowledged publish.",
                explicit_bucket_boundaries_advisory=(
                    0.005,
                    0.01,
                    0.025,
                    0.05,
                    0.1,
                    0.25,
                    0.5,
                    1.0,
                    2.5,
                    5.0,
                    10.0,
                    30.0,
                    60.0,
                ),
            ),
            published=m.create_counter(
                "wis2l.outbox.published",
                unit="{event}",
                description="Events the outbox relay published and marked.",
            ),
            dead=m.create_counter(
                "wis2l.events.dead_lettered",
                unit="{message}",
                description="Messages copied to a dead-letter subject.",
            ),
        )


_INST: Instruments[_Messaging] = Instruments(_Messaging.make)


def _send_attrs(subject: str) -> dict[str, Any]:
    return {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.destination.name": subject,
    }


def _failed_attrs(base: Mapping[str, Any], exc: BaseException) -> dict[str, Any]:
    return {**base, "error.type": type(exc).__qualname__}


def _fail(span: Span | None, exc: BaseException) -> None:
    if span is not None and span.is_recording():
        span.set_attribute("error.type", type(exc).__qualname__)
        span.set_status(_trace.Status(_trace.StatusCode.ERROR, str(exc)[:200]))


# -- sending ----------------------------------------------------------------------------


@contextlib.contextmanager
def _publish_scope(
    tr: Tracer | None, inst: _Messaging | None, subject: str, msg_id: str, headers: dict[str, str]
) -> Iterator[None]:
    attributes = _send_attrs(subject)
    span = None
    if tr is not None:
        span = tr.start_span(
            f"send {subject}",
            kind=_trace.SpanKind.PRODUCER,
            attributes={**attributes, "messaging.message.id": msg_id},
        )
        _inject(span, headers)
    start = time.perf_counter()
    try:
        yield
    except BaseException as exc:
        _fail(span, exc)
        if inst is not None:
            failed = _failed_attrs(attributes, exc)
            inst.duration.record(time.perf_counter() - start, failed)
            inst.sent.add(1, failed)
        raise
    finally:
        if span is not None:
            span.end()
    if inst is not None:
        inst.duration.record(time.perf_counter() - start, attributes)
        inst.sent.add(1, attributes)


def publishing(
    subject: str, msg_id: str, headers: dict[str, str]
) -> contextlib.AbstractContextManager[None]:
    """Around ``bus.publish``: a ``send <subject>`` span (a child of the current one) whose
    context goes into ``headers``, and the send metrics. Nothing without an SDK."""
    tr, inst = tracer(), _INST.get()
    if tr is None and inst is None:
        return contextlib.nullcontext()
    return _publish_scope(tr, inst, subject, msg_id, headers)


_Started = tuple["Span | None", dict[str, Any], float]
"""A message's span (or None), metric attributes and start time."""


class Sending:
    """The spans and metrics of one batch the relay sends (``bus.send_encoded``).

    A ``send`` span (kind CLIENT) covers the batch until its last ack; each message has a
    ``send <subject>`` span (kind PRODUCER) under it, linked to the context its event was
    written in, that ends with the message's ack (or its failure). A message whose event
    kept no context carries the context of its own ``send`` span instead.
    """

    def __init__(self, tr: Tracer | None, inst: _Messaging | None, count: int) -> None:
        self._tracer = tr
        self._inst = inst
        self._attrs: dict[str, dict[str, Any]] = {}
        self._sent: dict[int, tuple[dict[str, Any], int]] = {}  # added once, at the end
        self._open = 0
        self._closed = False
        self._batch: Span | None = None
        self._ctx: Any = None
        if tr is not None:
            self._batch = tr.start_span(
                "send",
                kind=_trace.SpanKind.CLIENT,
                attributes={
                    "messaging.system": SYSTEM,
                    "messaging.operation.type": "send",
                    "messaging.operation.name": "publish",
                    "messaging.batch.message_count": count,
                },
            )
            self._ctx = _trace.set_span_in_context(self._batch)

    def message(
        self, subject: str, msg_id: str, stored: str | None, headers: dict[str, str]
    ) -> _Started:
        """Start the message's span (before it is written); see :meth:`sent`."""
        attributes = self._attrs.get(subject)
        if attributes is None:
            attributes = self._attrs[subject] = _send_attrs(subject)
        span = None
        if self._tracer is not None:
            link = _link(stored) if stored else None
            span = self._tracer.start_span(
                f"send {subject}",
                context=self._ctx,
                kind=_trace.SpanKind.PRODUCER,
                attributes={**attributes, "messaging.message.id": msg_id},
                links=(link,) if link is not None else (),
            )
            if not stored:
                _inject(span, headers)
        return span, attributes, time.perf_counter()

    def sent(self, started: _Started, ack: asyncio.Future[Any]) -> None:
        """The message was written; its span and metrics end with ``ack``."""
        self._open += 1
        ack.add_done_callback(lambda fut: self._acked(started, fut))

    def written(self) -> None:
        """A message is being written; :meth:`acked` or :meth:`unwritten` ends it."""
        self._open += 1

    def acked(self, started: _Started, exc: BaseException | None) -> None:
        """The message's ack came (``exc`` None) or it failed."""
        span, attributes, start = started
        self._end(span, attributes, start, exc)
        self._open -= 1
        self._finish()

    def unwritten(self, started: _Started, exc: BaseException | None) -> None:
        """The message counted by :meth:`written` was never sent."""
        self.acked(started, exc or RuntimeError("not sent"))

    def failed(self, started: _Started, exc: BaseException) -> None:
        """The message could not be written (nothing after it is)."""
        span, attributes, start = started
        self._end(span, attributes, start, exc)

    def close(self, failed: BaseException | None) -> None:
        """Every message of the batch was handed over (or ``failed`` stopped it)."""
        self._closed = True
        if failed is not None and self._batch is not None:
            _fail(self._batch, failed)
        self._finish()

    def _acked(self, started: _Started, fut: Any) -> None:
        span, attributes, start = started
        if fut.cancelled():
            exc: BaseException | None = TimeoutError("no JetStream ack in time")
        else:
            exc = fut.exception()
        self._end(span, attributes, start, exc)
        self._open -= 1
        self._finish()

    def _end(
        self, span: Span | None, attributes: dict[str, Any], start: float, exc: BaseException | None
    ) -> None:
        if exc is not None:
            _fail(span, exc)
            attributes = _failed_attrs(attributes, exc)
        if span is not None:
            span.end()
        if self._inst is not None:
            self._inst.duration.record(time.perf_counter() - start, attributes)
            key = id(attributes)  # one dict per subject (and per failure)
            self._sent[key] = (attributes, self._sent.get(key, (attributes, 0))[1] + 1)

    def _finish(self) -> None:
        if not self._closed or self._open:
            return
        if self._inst is not None:
            for attributes, count in self._sent.values():
                self._inst.sent.add(count, attributes)
            self._sent.clear()
        if self._batch is not None:
            self._batch.end()
            self._batch = None


def sending(count: int) -> Sending | None:
    """The recorder of a relay batch of ``count`` messages, or ``None`` without an SDK."""
    tr, inst = tracer(), _INST.get()
    if tr is None and inst is None:
        return None
    return Sending(tr, inst, count)


def relayed(rows: Sequence[Any], created: int) -> None:
    """The relay marked ``rows`` published: ``wis2l.outbox.published`` and the latency of
    each (``row[created]``, its write time, to now)."""
    inst = _INST.get()
    if inst is None or not rows:
        return
    inst.published.add(len(rows))
    now = time.time()
    record = inst.latency.record
    for row in rows:
        record(max(0.0, now - row[created].timestamp()))


# -- consuming --------------------------------------------------------------------------


class _Options(Protocol):
    @property
    def durable(self) -> str: ...
    @property
    def consumer(self) -> str: ...


def _consumer_attrs(subject: str, options: _Options, operation: str) -> dict[str, Any]:
    return {
        "messaging.system": SYSTEM,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": subject,
        "messaging.consumer.group.name": options.durable,
        "messaging.destination.subscription.name": options.consumer,
    }


def consumed(subject: str, options: _Options, count: int) -> None:
    """A fetch brought ``count`` messages: ``messaging.client.consumed.messages``."""
    inst = _INST.get()
    if inst is not None and count:
        inst.consumed.add(count, _consumer_attrs(subject, options, "receive"))


class _Process:
    """The process span of the message being handled (a handler's task has its own)."""

    __slots__ = ("error", "span")

    def __init__(self, span: Span | None) -> None:
        self.span = span
        self.error: str | None = None


_PROCESS: ContextVar[_Process | None] = ContextVar("wis2l_process", default=None)


@contextlib.contextmanager
def _process_scope(
    tr: Tracer | None,
    inst: _Messaging | None,
    *,
    subject: str,
    options: _Options,
    headers: Mapping[str, str] | None,
    deliveries: int,
) -> Iterator[None]:
    attributes = _consumer_attrs(subject, options, "process")
    span = None
    if tr is not None:
        span_attrs = {**attributes, "messaging.nats.message.delivery_count": deliveries}
        msg_id = (headers or {}).get("Nats-Msg-Id")
        if msg_id:
            span_attrs["messaging.message.id"] = msg_id
        span = tr.start_span(
            f"process {subject}",
            context=_extract(headers),
            kind=_trace.SpanKind.CONSUMER,
            attributes=span_attrs,
        )
    state = _Process(span)
    token = _PROCESS.set(state)
    start = time.perf_counter()
    try:
        if span is None:
            yield
        else:
            with _trace.use_span(span, end_on_exit=True, record_exception=False):
                yield
    except BaseException as exc:
        state.error = state.error or type(exc).__qualname__
        raise
    finally:
        _PROCESS.reset(token)
        if inst is not None:
            if state.error is not None:
                attributes = {**attributes, "error.type": state.error}
            inst.process.record(time.perf_counter() - start, attributes)


def processing(
    subject: str, options: _Options, headers: Mapping[str, str] | None, deliveries: int
) -> contextlib.AbstractContextManager[None]:
    """Around a subscriber's handling of one message: a ``process <subject>`` span whose
    parent is the context the message carries, and ``messaging.process.duration``."""
    tr, inst = tracer(), _INST.get()
    if tr is None and inst is None:
        return contextlib.nullcontext()
    return _process_scope(
        tr, inst, subject=subject, options=options, headers=headers, deliveries=deliveries
    )


def process_failed(exc: BaseException) -> None:
    """The handler raised ``exc`` (or the message could not be decoded): the process
    span and its duration say so (``error.type``)."""
    state = _PROCESS.get()
    if state is not None:
        state.error = type(exc).__qualname__
        _fail(state.span, exc)


def dead_lettered(
    subject: str, dlq_subject: str, options: _Options, reason: str, exc: BaseException
) -> None:
    """A message went to the dead-letter subject: an event on the process span and
    ``wis2l.events.dead_lettered``."""
    state = _PROCESS.get()
    if state is None:
        return
    if state.span is not None:
        state.span.add_event(
            "wis2l.dead_lettered",
            {
                "wis2l.dlq.reason": reason,
                "wis2l.dlq.subject": dlq_subject,
                "error.type": type(exc).__qualname__,
            },
        )
    if state.error is None:
        process_failed(exc)
    inst = _INST.get()
    if inst is not None:
        attributes = _consumer_attrs(subject, options, "process")
        inst.dead.add(1, {**attributes, "wis2l.dlq.reason": reason})


def dead_letter_headers(original: Mapping[str, str] | None, headers: dict[str, str]) -> None:
    """Copy the trace headers of a message to its dead-letter copy."""
    if original:
        for name in TRACE_HEADERS:
            value = original.get(name)
            if value:
                headers[name] = value


# -- the outbox gauges ------------------------------------------------------------------


class _Relay(Protocol):
    @property
    def running(self) -> bool: ...
    @property
    def partitions(self) -> int: ...


class _Database(Protocol):
    @property
    def settings(self) -> Any: ...
    async def fetch_all(self, query: Any, params: Any) -> list[Any]: ...


def _database_name(database: _Database) -> str:
    from psycopg.conninfo import conninfo_to_dict

    try:
        return str(conninfo_to_dict(database.settings.database_url).get("dbname") or "")
    except Exception:
        return ""


class _Watched:
    """One relay's cached backlog per partition, refreshed at most every 5 s."""

    def __init__(self, relay: _Relay, database: _Database, loop: asyncio.AbstractEventLoop) -> None:
        self.relay = weakref.ref(relay)
        self.database = database
        self.name = _database_name(database)
        self.loop = loop
        self.values: dict[int, tuple[int, float]] = {}
        self.refreshed = float("-inf")
        self.task: asyncio.Task[None] | None = None

    def due(self) -> None:
        """Ask the relay's loop for a refresh if the values are older than 5 s."""
        if time.monotonic() - self.refreshed < GAUGE_REFRESH:
            return
        if self.task is not None and not self.task.done():
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed
            self.loop.call_soon_threadsafe(self._spawn)

    def _spawn(self) -> None:
        if self.task is None or self.task.done():
            self.task = self.loop.create_task(self.refresh(), name="wis2l-outbox-gauges")

    async def refresh(self) -> None:
        """Read the backlog per partition now (one bounded query)."""
        from wis2l_core.db.sql import query_file

        relay = self.relay()
        if relay is None:
            return
        query = query_file("outbox")["backlog_by_partition"]
        params = {"partitions": relay.partitions, "cap": GAUGE_CAP}
        try:
            rows = await self.database.fetch_all(query, params)
        except Exception:  # the database is down: the gauges keep their last values
            return
        found = {int(r["part"]): (int(r["size"]), float(r["oldest_age_s"])) for r in rows}
        self.values = {p: found.get(p, (0, 0.0)) for p in range(relay.partitions)}
        self.refreshed = time.monotonic()


_WATCHED: weakref.WeakKeyDictionary[Any, _Watched] = weakref.WeakKeyDictionary()
"""The running relays whose backlog the gauges report."""
_METERS: weakref.WeakSet[Any] = weakref.WeakSet()
"""The meters the gauges are registered with."""


def _live() -> Iterator[_Watched]:
    for relay, watched in list(_WATCHED.items()):
        if relay.running:
            watched.due()
            yield watched


def _observe_backlog(options: CallbackOptions) -> Iterable[Observation]:
    from opentelemetry.metrics import Observation

    for w in _live():
        for part, (size, _) in w.values.items():
            yield Observation(size, {"db.namespace": w.name, "wis2l.outbox.partition": part})


def _observe_lag(options: CallbackOptions) -> Iterable[Observation]:
    from opentelemetry.metrics import Observation

    for w in _live():
        for part, (_, age) in w.values.items():
            yield Observation(age, {"db.namespace": w.name, "wis2l.outbox.partition": part})


def _register(m: Meter) -> None:
    if m in _METERS:
        return
    _METERS.add(m)
    m.create_observable_gauge(
        "wis2l.outbox.backlog",
        callbacks=[_observe_backlog],
        unit="{event}",
        description="Events committed and not yet published, per outbox partition "
        f"(counted among the oldest {GAUGE_CAP:,} only).",
    )
    m.create_observable_gauge(
        "wis2l.outbox.lag",
        callbacks=[_observe_lag],
        unit="s",
        description="Seconds since the oldest unpublished event of the partition was "
        "written (0 when none waits).",
    )


def watch_outbox(relay: _Relay, database: _Database) -> Callable[[], Awaitable[None]]:
    """Report ``relay``'s backlog as ``wis2l.outbox.backlog``/``.lag`` while it runs.

    The gauges read a cache that a collection refreshes in the background (one bounded
    query, at most every 5 s); they are registered with a meter together with the
    messaging instruments. Without an SDK this only notes the relay (no query is made).
    Returns the refresh (a coroutine function).
    """
    loop = asyncio.get_running_loop()
    watched = _WATCHED.get(relay)
    if watched is None:
        watched = _WATCHED[relay] = _Watched(relay, database, loop)
    watched.loop = loop
    if _INST.get() is not None:  # registers the gauges with the current meter
        watched.due()
    return watched.refresh
