"""``EventBus``: the NATS connection, the JetStream stream, publishing and subscribers.

The bus connects in the background and never gives up: NATS may be down when the app
starts, or restart later with an empty store. Each time the connection comes up the
stream is ensured (created, or updated when its configuration drifted) before anything is
published or consumed, and the subscribers re-create their consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Literal, NamedTuple, TypeVar, overload

import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client as NatsClient
from nats.js.api import StreamConfig
from nats.js.client import JetStreamContext

from wis2l_core._aio import cancel_and_wait
from wis2l_core._backoff import Backoff
from wis2l_core._net import whole_seconds
from wis2l_core._outage import Outage
from wis2l_core._urls import nats_credentials
from wis2l_core.catalogue import DomainEvent, event_payload
from wis2l_core.config import Settings, redact_url
from wis2l_core.errors import ConfigError, ServiceUnavailable, ValidationError
from wis2l_core.events._errors import map_nats_errors
from wis2l_core.events._publish import HeaderEncoder, PendingAcks, Publisher
from wis2l_core.events.cloudevents import cloudevent_headers
from wis2l_core.events.streams import API_TIMEOUT, ELECTION_PROBE, Stream
from wis2l_core.events.subscriber import Handler, Subscriber, SubscriptionOptions
from wis2l_core.subjects import checked_subject, dlq_subject
from wis2l_core.telemetry import _messaging

__all__ = ["EncodedEvent", "EventBus", "Handler", "PendingAcks"]

log = logging.getLogger("wis2l_core.events")

E = TypeVar("E", bound=DomainEvent)

_RECONNECT_WAIT = 1.0
_CLOSE_TIMEOUT = 5.0
_CONSTANT_HEADERS = frozenset(
    {"ce-specversion", "ce-type", "ce-source", "ce-datacontenttype", "content-type"}
)
"""Headers whose values repeat (per event type and namespace): encoded once."""


class EncodedEvent(NamedTuple):
    """An event already in its wire form, as the outbox stores it.

    Attributes:
        type: the event type, e.g. ``"build.progress"`` (the subject without namespace).
        payload: the JSON body.
        id: the event id, sent as ``Nats-Msg-Id`` and ``ce-id``.
        time: ``occurred_at`` in RFC 3339 form, sent as ``ce-time`` (when known).
        trace: the trace context the event was written in (``events.trace_context``),
            sent as ``traceparent``/``tracestate`` and ``ce-traceparent`` headers.
    """

    type: str
    payload: bytes
    id: str
    time: str | None = None
    trace: str | None = None


class EventBus:
    """Typed domain events over NATS JetStream.

    No I/O happens in the constructor; :meth:`open` connects (retrying in the background
    when NATS is down) and :meth:`close` stops the subscribers and disconnects.

    Args:
        settings: ``nats_urls``, ``namespace``, ``stream_name``, ``stream_duplicate_window``,
            ``stream_replicas``, ``nats_connect_timeout``, ``health_timeout`` and
            ``shutdown_timeout`` are used.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.namespace = settings.namespace
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._probe: JetStreamContext | None = None
        self._subscribers: list[Subscriber[DomainEvent]] = []
        self._opened = False
        self._closing = False
        self._started = False
        self._ready: asyncio.Event | None = None
        self._generation = 0
        self._connect_task: asyncio.Task[None] | None = None
        self._setup_task: asyncio.Task[None] | None = None
        self._outage = Outage("nats", log, name="NATS", keep_error=False)
        self._stream = Stream(settings, lambda: self.connected)
        self._refusal: ConfigError | None = None  # why the stream cannot be ensured
        self._encoder = HeaderEncoder(_CONSTANT_HEADERS)
        self._publisher: Publisher | None = None

    # -- state -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the connection to NATS is up."""
        return self._nc is not None and self._nc.is_connected

    @property
    def ready(self) -> bool:
        """True when connected and the stream is ensured for the current connection."""
        return self.connected and self._ready is not None and self._ready.is_set()

    @property
    def generation(self) -> int:
        """How many times the connection came up with the stream ensured (subscribers
        re-create their consumers when it changes)."""
        return self._generation

    @property
    def jetstream(self) -> JetStreamContext:
        """The nats-py JetStream context, for advanced use (tools, benchmarks).

        Raises:
            ServiceUnavailable: not connected to NATS.
        """
        if self._js is None or not self.connected:
            raise ServiceUnavailable("nats: not connected", service="nats")
        return self._js

    def _live_publisher(self) -> Publisher:
        """The connection's publisher (see :mod:`wis2l_core.events._publish`).

        Raises:
            ServiceUnavailable: not connected to NATS.
        """
        if self._publisher is None or not self.connected:
            raise ServiceUnavailable("nats: not connected", service="nats")
        return self._publisher

    def subject(self, event_type: str | type[DomainEvent] | DomainEvent) -> str:
        """The subject of an event type, class or event: ``<namespace>.<type>``.

        Raises:
            ValidationError: the type is not dot-separated letters, digits, ``-`` and
                ``_`` (it would not be one literal NATS subject).
        """
        type_ = event_type if isinstance(event_type, str) else event_type.type
        return checked_subject(self.namespace, type_)

    def dlq_subject(self, subject: str) -> str:
        """Where messages of ``subject`` go when they cannot be handled."""
        return dlq_subject(self.namespace, subject)

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until :attr:`ready` (at most ``timeout`` seconds); return whether it is."""
        if self.ready:
            return True
        if self._ready is None:  # not open
            return False
        try:
            await asyncio.wait_for(self._until_ready(self._ready), timeout)
        except TimeoutError:
            return False
        return self.ready

    async def _until_ready(self, event: asyncio.Event) -> None:
        while not self.ready:
            await event.wait()
            if not self.ready:  # set, but the disconnect is not processed yet
                await asyncio.sleep(0.05)

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self, *, require: bool = False) -> None:
        """Connect to NATS and ensure the stream. Calling it again does nothing.

        The connection is retried forever in the background; ``open`` waits up to
        ``nats_connect_timeout`` for the first one.

        Args:
            require: raise (and stop trying) if NATS cannot be reached in that time,
                instead of logging and going on in the background (for production, when
                NATS is a critical service).

        Raises:
            ServiceUnavailable: ``require`` is true and NATS is not reachable.
            ConfigError: ``require`` is true and NATS refused the stream's configuration
                (e.g. ``WIS2L_STREAM_REPLICAS`` above 1 on a server not in a cluster).
        """
        if self._opened:
            return
        self._opened, self._closing = True, False
        self._ready = asyncio.Event()
        self._nc = NatsClient()
        self._connect_task = asyncio.create_task(self._connect(self._nc), name="wis2l-nats")
        wait = self.settings.nats_connect_timeout + 0.5
        done, _ = await asyncio.wait({self._connect_task}, timeout=wait)
        if done and self.connected:
            await self.wait_ready(self.settings.nats_connect_timeout)
        if self.ready:
            return
        urls = ", ".join(self._redacted_urls())
        if require:
            await self.close(0)
            if self._refusal is not None:
                raise self._refusal
            raise ServiceUnavailable(f"nats: cannot reach {urls}", service="nats")
        log.warning(
            "NATS is not ready yet (%s unreachable, or JetStream unavailable); "
            "retrying in the background",
            urls,
            extra={"service": "nats"},
        )

    async def close(self, timeout: float | None = None) -> None:
        """Stop the subscribers (their running handlers finish), then disconnect.

        Idempotent.

        Args:
            timeout: seconds to wait for running handlers (``shutdown_timeout`` when
                omitted); handlers still running then are cancelled.
        """
        if not self._opened:
            return
        self._opened, self._closing, self._started = False, True, False
        limit = self.settings.shutdown_timeout if timeout is None else timeout
        await asyncio.gather(*(s.stop(limit) for s in self._subscribers))
        await cancel_and_wait(*(t for t in (self._connect_task, self._setup_task) if t))
        nc, self._nc, self._js, self._probe = self._nc, None, None, None
        self._publisher = None
        if nc is not None:
            try:
                if nc.is_connected:
                    await nc.flush(timeout=1)
            except Exception as exc:
                log.debug("NATS flush at close failed: %s", exc)
            try:
                await asyncio.wait_for(nc.close(), _CLOSE_TIMEOUT)
            except Exception as exc:
                log.warning("NATS close failed or overran: %r", exc)
                # A close cut short marks the client closed before it closes its socket.
                transport = getattr(nc, "_transport", None)
                if transport is not None:
                    with contextlib.suppress(Exception):
                        transport.close()
        if self._ready is not None:
            self._ready.clear()
        log.info("event bus closed")

    async def _connect(self, nc: NatsClient) -> None:
        servers, credentials = nats_credentials(self.settings.nats_urls)
        await nc.connect(
            servers,
            **credentials,  # type: ignore[arg-type]
            name="wis2l-core",
            connect_timeout=whole_seconds(self.settings.nats_connect_timeout),
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=_RECONNECT_WAIT,  # type: ignore[arg-type]
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
        )
        self._js = nc.jetstream(timeout=API_TIMEOUT)
        self._probe = nc.jetstream(timeout=ELECTION_PROBE)
        publisher = Publisher(nc, self._encoder)
        await publisher.start()  # checks the nats-py internals it writes through
        self._publisher = publisher
        log.info("connected to NATS", extra={"service": "nats"})
        self._outage.recovered()
        await self._bring_up()

    async def _on_error(self, exc: Exception) -> None:
        if self._outage.down:
            log.debug("NATS: %s", exc or type(exc).__name__, extra={"service": "nats"})
        self._outage.failed(exc, "NATS: %s", exc or type(exc).__name__)

    async def _on_disconnected(self) -> None:
        if self._ready is not None:
            self._ready.clear()
        if not self._closing:
            log.warning("disconnected from NATS; reconnecting", extra={"service": "nats"})

    async def _on_reconnected(self) -> None:
        log.info("reconnected to NATS", extra={"service": "nats"})
        self._outage.recovered()
        # Not awaited here: the client calls this from its reconnect path, before the
        # JetStream replies can be read.
        if self._setup_task is None or self._setup_task.done():
            self._setup_task = asyncio.create_task(self._bring_up(), name="wis2l-nats-setup")

    async def _bring_up(self) -> None:
        backoff = Backoff.reconnect()
        while not self._closing and self.connected:
            try:
                await self.ensure_stream()
            except ConfigError as exc:  # retrying cannot help
                self._refusal = exc
                log.error("cannot ensure the stream: %s", exc, extra={"service": "nats"})
                return
            except ServiceUnavailable as exc:
                log.warning("cannot ensure the stream yet: %s", exc, extra={"service": "nats"})
                await asyncio.sleep(backoff.next())
                continue
            self._generation += 1
            if self._ready is not None:
                self._ready.set()
            for sub in self._subscribers:
                sub.interrupt()  # their pending fetches died with the old connection
            return

    # -- stream --------------------------------------------------------------------------

    def stream_config(self) -> StreamConfig:
        """The configuration the stream must have (name, subjects, storage, dedup window,
        replicas)."""
        return self._stream.config()

    async def ensure_stream(self) -> None:
        """Create the stream, or update it (keeping its messages) if its config differs.

        See :meth:`wis2l_core.events.streams.Stream.ensure`: only the fields wis2l-core
        owns are set, replicas are only ever raised, and a replicated stream's leader
        election is waited out.

        Raises:
            ServiceUnavailable: not connected, NATS or JetStream does not answer, or
                refuses the config (including a stream of several replicas while too few
                servers are up).
            ConfigError: the stream name or namespace is one NATS refuses, or
                ``stream_replicas`` is above 1 on a server that is not in a cluster.
        """
        await self._stream.ensure(self.jetstream, self._probe)

    # -- publishing ----------------------------------------------------------------------

    async def publish(self, event: DomainEvent) -> None:
        """Publish one event that has no database write, and wait for JetStream's ack.

        The message is a CloudEvent in binary mode (see
        :mod:`wis2l_core.events.cloudevents`): the event's JSON as the body, ``ce-*``
        headers, and ``Nats-Msg-Id`` = the event id, so publishing the same event twice
        within the stream's duplicate window stores it once.

        Raises:
            ValidationError: ``event`` is not a well-formed event (e.g. an id that is not a
                UUID) or is larger than the server's payload limit; nothing was sent.
            ConfigError: NATS refuses the stream name or namespace.
            ServiceUnavailable: NATS is down, or did not acknowledge in time.
        """
        subject, data, headers = self._message(event)
        # unexpected: nats-py raises ValueError and others of its own from a publish
        with (
            _messaging.publishing(subject, headers["Nats-Msg-Id"], headers),
            map_nats_errors(f"publish to {subject}", unexpected=True),
        ):
            for attempt in (1, 2):
                acks = await self._live_publisher().send([(subject, data, headers)], 1)
                (error,) = await acks.wait(API_TIMEOUT)
                if error is None:
                    return
                if isinstance(error, nats.js.errors.NoStreamResponseError) and attempt == 1:
                    await self.ensure_stream()  # NATS restarted empty; set-up still pending
                    continue
                if isinstance(error, nats.errors.MaxPayloadError):
                    raise ValidationError(
                        f"{event.type!r} event of {len(data)} bytes is larger than NATS accepts",
                        field="event",
                    ) from error
                raise error

    def _message(self, event: DomainEvent) -> tuple[str, bytes, dict[str, str]]:
        """Subject, body and headers of ``event`` (checked when it was built)."""
        if not isinstance(event, DomainEvent):
            raise ValidationError(f"not an event: {type(event).__name__}", field="event")
        subject = self.subject(event)
        try:
            payload = event_payload(event)
            data = orjson.dumps(payload)
        except Exception as exc:  # e.g. artifacts holding what JSON cannot
            raise ValidationError(f"cannot encode {event.type!r}: {exc}", field="event") from exc
        headers = cloudevent_headers(
            event.type, payload["id"], namespace=self.namespace, time=payload["occurred_at"]
        )
        return subject, data, headers

    async def send_encoded(self, messages: Sequence[EncodedEvent]) -> PendingAcks:
        """Write encoded events to JetStream without waiting for their acks.

        The messages go out in order on the one connection, so JetStream stores them in
        that order (and after any sent before). Keep at most a few thousand in flight.
        Each message's headers are a dict until the publisher encodes them.

        Raises:
            ServiceUnavailable: not connected (nothing was sent).
        """
        publisher = self._live_publisher()
        namespace = self.namespace
        subjects: dict[str, str] = {}

        def subject(type_: str) -> str:
            found = subjects.get(type_)
            if found is None:
                found = subjects[type_] = self.subject(type_)
            return found

        traced = _messaging.sending(len(messages))  # None without an SDK
        if traced is None:
            return await publisher.send(
                (
                    (
                        subject(msg.type),
                        msg.payload,
                        cloudevent_headers(
                            msg.type, msg.id, namespace=namespace, time=msg.time, trace=msg.trace
                        ),
                    )
                    for msg in messages
                ),
                len(messages),
            )
        started: list[Any] = []

        def traced_messages() -> Iterator[tuple[str, bytes, dict[str, str]]]:
            for msg in messages:
                to = subject(msg.type)
                headers = cloudevent_headers(
                    msg.type, msg.id, namespace=namespace, time=msg.time, trace=msg.trace
                )
                started.append(traced.message(to, msg.id, msg.trace, headers))
                traced.written()
                yield to, msg.payload, headers

        pending = await publisher.send(
            traced_messages(),
            len(messages),
            on_ack=lambda index, error: traced.acked(started[index], error),
        )
        for unacked in started[pending.written :]:  # the write that failed stopped the batch
            traced.unwritten(unacked, pending.failed)
        traced.close(pending.failed)
        return pending

    # -- subscribing ---------------------------------------------------------------------

    @overload
    def subscribe(
        self,
        event_type: type[E],
        handler: Handler[E],
        *,
        durable: str | None = None,
        max_deliver: int = 5,
        concurrency: int = 16,
        backoff: Sequence[float] = (1.0, 5.0, 15.0, 30.0),
        ack_wait: float = 30.0,
        deliver: Literal["all", "new"] = "all",
    ) -> Handler[E]: ...
    @overload
    def subscribe(
        self,
        event_type: type[E],
        handler: None = None,
        *,
        durable: str | None = None,
        max_deliver: int = 5,
        concurrency: int = 16,
        backoff: Sequence[float] = (1.0, 5.0, 15.0, 30.0),
        ack_wait: float = 30.0,
        deliver: Literal["all", "new"] = "all",
    ) -> Callable[[Handler[E]], Handler[E]]: ...
    def subscribe(
        self,
        event_type: type[E],
        handler: Handler[E] | None = None,
        *,
        durable: str | None = None,
        max_deliver: int = 5,
        concurrency: int = 16,
        backoff: Sequence[float] = (1.0, 5.0, 15.0, 30.0),
        ack_wait: float = 30.0,
        deliver: Literal["all", "new"] = "all",
    ) -> Handler[E] | Callable[[Handler[E]], Handler[E]]:
        """Run ``handler`` for every ``event_type`` event, on a durable consumer.

        Usable directly or as a decorator (``@bus.subscribe(BuildProgress, durable="x")``).
        The message is acked when the handler returns; when it raises, the message is
        delivered again after ``backoff[attempt - 1]`` seconds (the last value repeats);
        after ``max_deliver`` failed tries it is copied to ``<namespace>.dlq.<subject>``
        with the error in its headers, and dropped from the consumer. A message that does
        not decode goes to the dead-letter subject at once. Registered before
        :meth:`start_subscribers` it starts then; after, it starts at once.

        Args:
            event_type: the catalogue class to receive.
            handler: ``async def handler(event) -> None``.
            durable: the consumer's name (processes sharing it share the work); the
                JetStream consumer is ``<durable>-<entity>-<action>``. Defaults to the
                handler's qualified name.
            max_deliver: tries before the dead-letter subject (>= 1).
            concurrency: handlers of this subscription running at once (>= 1; 1 handles
                events one at a time in stream order, apart from redeliveries).
            backoff: delays in seconds before each redelivery.
            ack_wait: seconds before an unacknowledged message is delivered again if its
                process died; running handlers extend it automatically.
            deliver: for a consumer that does not exist yet: ``"all"`` starts at the
                beginning of the stream, ``"new"`` with the next event.

        Returns:
            ``handler`` (or a decorator that registers and returns it).

        Raises:
            ValidationError: a bad option (``field`` names it).
        """

        def register(fn: Handler[E]) -> Handler[E]:
            name = durable if durable is not None else _default_durable(fn)
            options = SubscriptionOptions.make(
                durable=name,
                event_type=event_type,
                max_deliver=max_deliver,
                concurrency=concurrency,
                backoff=backoff,
                ack_wait=ack_wait,
                deliver=deliver,
            )
            if any(s.options.consumer == options.consumer for s in self._subscribers):
                raise ValidationError(
                    f"durable {name!r} already subscribes to {event_type.type!r}",
                    field="durable",
                )
            sub: Subscriber[E] = Subscriber(self, event_type, fn, options)
            self._subscribers.append(sub)  # type: ignore[arg-type]
            if self._started:
                sub.start()
            return fn

        return register if handler is None else register(handler)

    async def start_subscribers(self) -> None:
        """Start every registered subscription (and any registered later). Idempotent.

        Consumers are created once NATS is reachable; until then the subscriptions wait.

        Raises:
            ServiceUnavailable: the bus is not open.
        """
        if not self._opened:
            raise ServiceUnavailable("nats: the event bus is not open", service="nats")
        if self._started:
            return
        self._started = True
        for sub in self._subscribers:
            sub.start()

    # -- health --------------------------------------------------------------------------

    async def ping(self) -> None:
        """Check the connection and the stream (one JetStream API call).

        Raises:
            ServiceUnavailable: not connected, JetStream does not answer in
                ``health_timeout``, or the stream is missing.
        """
        js = self.jetstream
        name = self.settings.stream_name
        with map_nats_errors():
            try:
                await asyncio.wait_for(js.stream_info(name), self.settings.health_timeout)
            except nats.js.errors.NotFoundError as exc:
                raise ServiceUnavailable(f"nats: stream {name} is missing", service="nats") from exc

    def _redacted_urls(self) -> list[str]:
        return [redact_url(u) for u in self.settings.nats_urls]


def _default_durable(fn: Callable[..., Awaitable[object]]) -> str:
    name = str(getattr(fn, "__qualname__", "") or getattr(fn, "__name__", "") or "handler")
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name).strip("_") or "handler"
