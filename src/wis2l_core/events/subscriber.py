"""One subscription: a durable pull consumer, bounded concurrent handlers, retries, DLQ.

The fetch loop asks JetStream only for as many messages as there are free handler slots,
so a slow or failing handler never piles messages up in memory, and a failing message
(nak'd with a delay) never blocks the ones behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, Literal, Protocol, TypeVar

import attrs
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext

from wis2l_core._aio import cancel_and_wait
from wis2l_core._backoff import Backoff
from wis2l_core.catalogue import DomainEvent
from wis2l_core.config import Settings
from wis2l_core.errors import ServiceUnavailable, ValidationError
from wis2l_core.events._errors import ELECTING, LEADERLESS, map_nats_errors, stream_missing
from wis2l_core.events.cloudevents import decode_message
from wis2l_core.telemetry import _messaging

__all__ = ["DLQ_HEADERS", "Handler", "Subscriber", "SubscriberBus", "SubscriptionOptions"]

log = logging.getLogger("wis2l_core.events")

E = TypeVar("E", bound=DomainEvent)

Handler = Callable[[E], Awaitable[object]]
"""An async function taking one event."""

DLQ_HEADERS = (
    "Wis2l-Dlq-Reason",  # "decode", "handler" or "max_deliver"
    "Wis2l-Dlq-Error",  # "<ExceptionType>: <message>" (one line, at most 1000 characters)
    "Wis2l-Dlq-Subject",  # the original subject
    "Wis2l-Dlq-Consumer",  # the consumer that gave up
    "Wis2l-Dlq-Deliveries",  # how many times it was delivered
    "Wis2l-Dlq-Stream-Seq",  # its sequence in the stream
    "Wis2l-Event-Id",  # the original Nats-Msg-Id (the event id), when it had one
)
"""Headers a dead-lettered message carries, besides a ``Nats-Msg-Id`` of its own."""

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
_FETCH_WAIT = 5.0
_ELECTION_POLL = 0.5  # seconds between fetches while a consumer has no leader
_ELECTION_GRACE = 15.0  # after that long without a leader, create the consumer again


class SubscriberBus(Protocol):
    """What a :class:`Subscriber` needs from the bus (:class:`~wis2l_core.events.EventBus`
    provides it): the subscriber depends on this, not on the bus module."""

    @property
    def settings(self) -> Settings:
        """The settings (``stream_name`` is used)."""
        ...

    @property
    def generation(self) -> int:
        """Changes each time the connection comes back with the stream ensured."""
        ...

    @property
    def jetstream(self) -> JetStreamContext:
        """The JetStream context (raises ``ServiceUnavailable`` when not connected)."""
        ...

    def subject(self, event_type: type[DomainEvent]) -> str:
        """The subject of an event class."""
        ...

    def dlq_subject(self, subject: str) -> str:
        """The dead-letter subject of ``subject``."""
        ...

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until connected with the stream ensured."""
        ...

    async def ensure_stream(self) -> None:
        """Create the stream again (it was deleted under us)."""
        ...


@attrs.frozen(kw_only=True)
class SubscriptionOptions:
    """The validated options of one subscription (see :meth:`EventBus.subscribe`)."""

    durable: str
    consumer: str
    max_deliver: int
    concurrency: int
    backoff: tuple[float, ...]
    ack_wait: float
    deliver: Literal["all", "new"]

    @classmethod
    def make(
        cls,
        *,
        durable: str,
        event_type: type[DomainEvent],
        max_deliver: int,
        concurrency: int,
        backoff: Sequence[float],
        ack_wait: float,
        deliver: Literal["all", "new"],
    ) -> SubscriptionOptions:
        """Check the options and name the consumer ``<durable>-<entity>-<action>``.

        Raises:
            ValidationError: a bad option (``field`` names it).
        """
        if not _NAME.match(durable):
            raise ValidationError(
                "durable must be 1-200 letters, digits, '-' or '_'", field="durable"
            )
        if max_deliver < 1:
            raise ValidationError("max_deliver must be >= 1", field="max_deliver")
        if concurrency < 1:
            raise ValidationError("concurrency must be >= 1", field="concurrency")
        delays = tuple(float(d) for d in backoff)
        if not delays or any(not 0 <= d < 86400 for d in delays):
            raise ValidationError("backoff needs delays in [0, 86400) seconds", field="backoff")
        if not ack_wait > 0:
            raise ValidationError("ack_wait must be > 0", field="ack_wait")
        if deliver not in ("all", "new"):
            raise ValidationError("deliver must be 'all' or 'new'", field="deliver")
        consumer = f"{durable}-{event_type.type.replace('.', '-')}"
        return cls(
            durable=durable,
            consumer=consumer,
            max_deliver=max_deliver,
            concurrency=concurrency,
            backoff=delays,
            ack_wait=float(ack_wait),
            deliver=deliver,
        )

    def delay(self, attempt: int) -> float:
        """Seconds to wait before redelivering after failed try number ``attempt``."""
        return self.backoff[min(attempt, len(self.backoff)) - 1]


class Subscriber(Generic[E]):
    """Runs one subscription's fetch loop and handlers; made by :meth:`EventBus.subscribe`."""

    def __init__(
        self,
        bus: SubscriberBus,
        event_type: type[E],
        handler: Handler[E],
        options: SubscriptionOptions,
    ) -> None:
        self.bus = bus
        self.event_type = event_type
        self.handler = handler
        self.options = options
        self.subject = bus.subject(event_type)
        self._task: asyncio.Task[None] | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self._running: dict[asyncio.Task[None], Msg] = {}
        self._slot_free: asyncio.Event | None = None
        self._fetching: asyncio.Future[list[Msg]] | None = None
        self._created = False  # the consumer was created (or found) once

    def start(self) -> None:
        """Start the fetch loop (it waits for NATS to be ready). Idempotent."""
        if self._task is not None and not self._task.done():
            return
        self._slot_free = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"wis2l-sub-{self.options.consumer}")
        self._keepalive = asyncio.create_task(self._extend(), name="wis2l-sub-keepalive")

    async def stop(self, timeout: float) -> None:
        """Stop fetching, let running handlers finish (up to ``timeout``), cancel the rest."""
        await cancel_and_wait(*(t for t in (self._task, self._keepalive) if t is not None))
        self._task = self._keepalive = None
        running = set(self._running)
        if running:
            _, late = await asyncio.wait(running, timeout=timeout)
            if late:
                log.warning("%d handler(s) for %s cancelled at shutdown", len(late), self.subject)
            await cancel_and_wait(*late)

    def interrupt(self) -> None:
        """Abandon the pending fetch (its pull request died with the old connection)."""
        if self._fetching is not None and not self._fetching.done():
            self._fetching.cancel()

    # -- the fetch loop ------------------------------------------------------------------

    async def _run(self) -> None:
        psub: JetStreamContext.PullSubscription | None = None
        generation = -1
        backoff = Backoff.reconnect()
        leaderless = _Leaderless(self.options.consumer, self.bus.settings.stream_replicas > 1)
        try:
            while True:
                # nats-py turns a cancellation inside its requests into a timeout, which
                # the handlers below would swallow; the task's own count does not lie.
                if _being_cancelled():
                    raise asyncio.CancelledError
                await self.bus.wait_ready()
                if psub is None or generation != self.bus.generation:
                    await _unsubscribe(psub)
                    generation = self.bus.generation
                    psub = await self._try_bind()
                    if psub is None:
                        await asyncio.sleep(backoff.next())
                        continue
                await self._wait_for_slot()
                if _being_cancelled():  # see the top of the loop
                    raise asyncio.CancelledError
                try:
                    msgs = await self._fetch(psub)
                except TimeoutError:  # nothing to do (nats' timeouts subclass it)
                    continue
                except asyncio.CancelledError:
                    if _being_cancelled():
                        raise
                    continue  # interrupted: the connection came back, re-create the consumer
                except Exception as exc:
                    if await leaderless.waited(exc):
                        continue  # the consumer is kept: it comes back with its new leader
                    log.warning("fetch from %s failed: %s", self.options.consumer, exc)
                    await _unsubscribe(psub)
                    psub = None
                    await asyncio.sleep(backoff.next())
                    continue
                leaderless.served()
                backoff.reset()
                _messaging.consumed(self.subject, self.options, len(msgs))
                for msg in msgs:
                    task = asyncio.create_task(self._handle(msg))
                    self._running[task] = msg
                    task.add_done_callback(self._done)
        finally:
            await _unsubscribe(psub)

    async def _fetch(self, psub: JetStreamContext.PullSubscription) -> list[Msg]:
        """Pull up to the free handler slots, without handing our cancellation to nats-py.

        nats-py may swallow a cancellation of its fetch and hold ``stop()`` until the pull
        expires, so the fetch runs as its own future that is abandoned on cancellation.
        """
        free = self.options.concurrency - len(self._running)
        fetching = asyncio.ensure_future(psub.fetch(free, timeout=_FETCH_WAIT))
        fetching.add_done_callback(_retrieve)
        self._fetching = fetching
        try:
            try:
                await asyncio.wait({fetching})
            except asyncio.CancelledError:
                fetching.cancel()
                raise
            return fetching.result()
        finally:
            self._fetching = None

    async def _try_bind(self) -> JetStreamContext.PullSubscription | None:
        """:meth:`_bind`, or ``None`` (logged) when it failed."""
        try:
            return await self._bind()
        except Exception as exc:  # the loop must outlive any one failure
            log.warning("cannot create consumer %s: %s", self.options.consumer, exc)
            if stream_missing(exc):  # deleted under us: make it again
                with contextlib.suppress(ServiceUnavailable):
                    await self.bus.ensure_stream()
            return None

    async def _bind(self) -> JetStreamContext.PullSubscription:
        js = self.bus.jetstream
        stream = self.bus.settings.stream_name
        name = self.options.consumer
        config = ConsumerConfig(
            name=name,
            durable_name=name,
            filter_subject=self.subject,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.options.ack_wait,
            # One more than ours: a message whose process died on its last try comes back
            # once more, and goes to the dead-letter subject instead of vanishing.
            max_deliver=self.options.max_deliver + 1,
            deliver_policy=DeliverPolicy.ALL
            if self.options.deliver == "all"
            else DeliverPolicy.NEW,
        )
        if self._created and await self._still_there(js, stream, name):
            return await js.pull_subscribe_bind(durable=name, stream=stream)
        try:
            await js.add_consumer(stream, config)
        except nats.js.errors.BadRequestError as exc:
            # e.g. a deliver policy change, which JetStream refuses: use the consumer as is.
            log.warning("consumer %s kept with its old config: %s", name, exc)
        self._created = True
        return await js.pull_subscribe_bind(durable=name, stream=stream)

    async def _still_there(self, js: JetStreamContext, stream: str, name: str) -> bool:
        """After a reconnect: whether the consumer made before is still there.

        Asked of the consumer's own leader, not of the cluster's metadata leader (which
        creating it needs, and which may be the server that just died). No answer means
        its replicas are electing a leader: it is bound anyway, and the fetches wait the
        election out. Only a consumer the server lost (it restarted empty) is made again.
        """
        try:
            await js.consumer_info(stream, name)
        except nats.js.errors.NotFoundError:
            return False
        except ELECTING:
            log.info("consumer %s does not answer yet (leader election?); binding", name)
        return True

    async def _wait_for_slot(self) -> None:
        assert self._slot_free is not None
        while len(self._running) >= self.options.concurrency:
            self._slot_free.clear()
            await self._slot_free.wait()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        if self._slot_free is not None:
            self._slot_free.set()

    async def _extend(self) -> None:
        """Tell JetStream that long-running handlers are still working (``+WPI``)."""
        period = self.options.ack_wait / 3
        while True:
            await asyncio.sleep(period)
            for msg in list(self._running.values()):
                try:
                    await msg.in_progress()
                except Exception as exc:  # the connection may be down; redelivery covers it
                    log.debug("in-progress ack failed: %s", exc)

    # -- one message ---------------------------------------------------------------------

    async def _handle(self, msg: Msg) -> None:
        try:
            meta = msg.metadata
            attempt = meta.num_delivered
        except Exception as exc:  # not a JetStream message: cannot happen on a consumer
            log.error("unexpected message on %s: %s", msg.subject, exc)
            return
        # The process span: a child of the context the message carries (the writer's).
        with _messaging.processing(self.subject, self.options, msg.headers, attempt):
            await self._process(msg, attempt)

    async def _process(self, msg: Msg, attempt: int) -> None:
        try:
            event = decode_message(msg.data, msg.headers, cls=self.event_type)
        except ValidationError as exc:
            await self._dead_letter(msg, "decode", exc, attempt)
            return
        if attempt > self.options.max_deliver:
            reason = RuntimeError(f"delivered {attempt} times without an ack")
            await self._dead_letter(msg, "max_deliver", reason, attempt)
            return
        try:
            await self.handler(event)
        except Exception as exc:
            await self._failed(msg, event, exc, attempt)
            return
        try:
            await msg.ack()
        except Exception as exc:
            log.warning("ack of %s failed (it will be redelivered): %s", event.id, exc)

    async def _failed(self, msg: Msg, event: E, exc: Exception, attempt: int) -> None:
        _messaging.process_failed(exc)
        extra = {"event_id": str(event.id), "consumer": self.options.consumer}
        if attempt >= self.options.max_deliver:
            log.error(
                "handler for %s failed %d times; dead-lettering %s: %r",
                self.subject,
                attempt,
                event.id,
                exc,
                extra=extra,
            )
            await self._dead_letter(msg, "handler", exc, attempt)
            return
        delay = self.options.delay(attempt)
        log.warning(
            "handler for %s failed (try %d of %d), retrying in %.1fs: %r",
            self.subject,
            attempt,
            self.options.max_deliver,
            delay,
            exc,
            extra=extra,
        )
        try:
            await msg.nak(delay=delay)
        except Exception as nak_exc:
            log.warning("nak failed (redelivery after ack_wait instead): %s", nak_exc)

    async def _dead_letter(self, msg: Msg, reason: str, exc: BaseException, attempt: int) -> None:
        meta = msg.metadata
        seq = meta.sequence.stream if meta.sequence is not None else 0
        headers = {
            "Nats-Msg-Id": f"dlq:{self.options.consumer}:{seq}",
            "Wis2l-Dlq-Reason": reason,
            "Wis2l-Dlq-Error": _one_line(f"{type(exc).__name__}: {exc}"),
            "Wis2l-Dlq-Subject": msg.subject,
            "Wis2l-Dlq-Consumer": self.options.consumer,
            "Wis2l-Dlq-Deliveries": str(attempt),
            "Wis2l-Dlq-Stream-Seq": str(seq),
        }
        original_id = (msg.headers or {}).get("Nats-Msg-Id")
        if original_id:
            headers["Wis2l-Event-Id"] = original_id
        _messaging.dead_letter_headers(msg.headers, headers)  # the copy stays in the trace
        subject = self.bus.dlq_subject(msg.subject)
        try:
            with map_nats_errors(f"dead-letter to {subject}"):
                await self.bus.jetstream.publish(subject, msg.data, headers=headers)
        except ServiceUnavailable as pub_exc:
            log.error(
                "cannot dead-letter to %s (will retry): %s", subject, pub_exc.__cause__ or pub_exc
            )
            try:
                await msg.nak(delay=self.options.delay(len(self.options.backoff)))
            except Exception as nak_exc:
                log.debug("nak failed: %s", nak_exc)
            return
        _messaging.dead_lettered(msg.subject, subject, self.options, reason, exc)
        log.error(
            "dead-lettered %s message seq %d to %s (%s): %s",
            msg.subject,
            seq,
            subject,
            reason,
            headers["Wis2l-Dlq-Error"],
            extra={"consumer": self.options.consumer, "reason": reason},
        )
        try:
            await msg.term()
        except Exception as term_exc:  # redelivered later; its DLQ copy is de-duplicated
            log.warning("term failed: %s", term_exc)


class _Leaderless:
    """Waits out a consumer's leader election instead of re-creating the consumer.

    When the server that led a replicated consumer dies, its fetches get "no responders"
    (or JetStream's 503) until the other replicas elect a leader, usually within seconds.
    The consumer itself is fine, so the subscriber keeps it and asks again every half
    second. After ``_ELECTION_GRACE`` seconds of that the consumer may be gone instead
    (deleted by hand), and the caller creates it again. With one replica there is no
    election: the same answers mean the consumer (or the stream) is gone, and the caller
    creates it again at once.
    """

    def __init__(self, consumer: str, replicated: bool) -> None:
        self.consumer = consumer
        self.replicated = replicated
        self.since: float | None = None
        self.backoff = Backoff(initial=0.1, cap=_ELECTION_POLL, jitter=0.2)

    async def waited(self, exc: BaseException) -> bool:
        """Sleep and return True if ``exc`` says "no leader yet" within the grace period."""
        if not self.replicated or not _electing(exc):
            return False
        now = asyncio.get_running_loop().time()
        if self.since is None:
            self.since = now
            log.info("consumer %s has no leader (NATS is electing one); waiting", self.consumer)
        elif now - self.since > _ELECTION_GRACE:
            self.since = None
            self.backoff.reset()
            return False
        await asyncio.sleep(self.backoff.next())
        return True

    def served(self) -> None:
        """A fetch worked: the election (if any) is over."""
        if self.since is not None:
            self.since = None
            log.info("consumer %s is served again", self.consumer)
        self.backoff.reset()


def _electing(exc: BaseException) -> bool:
    """True for the answers a consumer gives while its replicas elect a leader: no
    responders (503) or JetStream's "temporarily unavailable"."""
    return isinstance(exc, LEADERLESS)


def _retrieve(future: asyncio.Future[list[Msg]]) -> None:
    # An abandoned fetch's outcome is of no interest; reading it keeps asyncio quiet.
    if not future.cancelled():
        future.exception()


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _one_line(text: str, limit: int = 1000) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


async def _unsubscribe(psub: JetStreamContext.PullSubscription | None) -> None:
    if psub is None:
        return
    try:
        await psub.unsubscribe()
    except Exception as exc:
        log.debug("unsubscribe failed: %s", exc)
