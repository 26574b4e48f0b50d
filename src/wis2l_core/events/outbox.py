"""The outbox relay: publishes committed ``events`` rows to JetStream, then marks them.

Repository writes insert their event row in the write's own transaction (so an event
exists exactly when its write committed); a row trigger sends ``NOTIFY wis2l_outbox``
with the row's partition key at commit. A relay wakes on a notification for a partition
it publishes (and on a fallback poll); the others ignore it.

Events are split into ``Settings.outbox_partitions`` partitions by project (events with no
project share partition 0). Relays in several processes share the partitions: each
relay's ``LISTEN`` session (``application_name`` ``wis2l-outbox <id>``) runs a heartbeat
while NATS is up, and every relay computes the same *home* partitions for each live relay
(round robin over the relays sorted by id). In one transaction per pass a relay:

1. bounds the transaction (``idle_in_transaction_session_timeout`` and
   ``statement_timeout`` = the lease) and takes the transaction-scoped advisory lock of
   each home partition no other relay holds (plus any partition whose oldest event has
   waited longer than the lease: a dead, stalled or slow relay's);
2. claims the oldest unpublished rows of the partitions it holds ``ORDER BY seq ... FOR
   UPDATE NOWAIT``, publishes them asynchronously (in order, on one connection) with
   ``Nats-Msg-Id`` = the event id, and waits for every JetStream ack;
3. marks the acknowledged rows published and commits, which releases the partitions.

Step 2 of one batch overlaps the others': while a batch is written to NATS, the
connection waits for the previous batch's acks, marks it and claims the next.

There is no "last id seen" cursor: every pass looks at all unpublished rows of a
partition, so a row that commits late with a lower ``seq`` is still found. If the relay
dies between 2 and 3 the rows stay unpublished and are sent again; JetStream's duplicate
window drops the repeats. See ``docs/events.md`` for the ordering argument.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable
from typing import Any

import attrs
import nats.js.errors
import orjson
from psycopg.rows import DictRow, tuple_row

from wis2l_core._aio import cancel_and_wait
from wis2l_core._backoff import Backoff
from wis2l_core._outage import Outage
from wis2l_core.config import Settings
from wis2l_core.db.connect import connect_to
from wis2l_core.db.errors import map_errors
from wis2l_core.db.locks import OUTBOX
from wis2l_core.db.pool import Connection, Database
from wis2l_core.db.sql import Query, query_file
from wis2l_core.errors import SchemaMissing, ServiceUnavailable, ValidationError, Wis2lError
from wis2l_core.events._errors import translate
from wis2l_core.events.bus import EncodedEvent, EventBus, PendingAcks
from wis2l_core.events.streams import API_TIMEOUT
from wis2l_core.telemetry import _messaging

__all__ = ["CHANNEL", "OutboxBacklog", "OutboxRelay", "home_partitions"]

log = logging.getLogger("wis2l_core.events.outbox")

CHANNEL = "wis2l_outbox"
"""The ``LISTEN``/``NOTIFY`` channel the ``events`` insert trigger signals."""
APPLICATION_PREFIX = "wis2l-outbox "
"""``application_name`` of a relay's ``LISTEN`` session, followed by the relay's id."""
_BATCHES_PER_TX = 8
_MAX_BATCH = 2000  # two batches in flight: at most 4,000 acks outstanding per relay
_Row = tuple[Any, ...]
"""A claimed row: seq, id (text), subject, payload, occurred_at (text), created_at,
trace_context (the writer's, or None)."""


async def _fetch(conn: Connection, query: Query, **params: Any) -> list[DictRow]:
    cur = await conn.execute(query.text, params, prepare=True)
    return await cur.fetchall()


def home_partitions(relay: str, relays: frozenset[str], partitions: int) -> tuple[int, ...]:
    """The partitions that ``relay`` publishes first when ``relays`` are alive.

    Round robin over the relays sorted by id: every relay computes the same split, and
    each gets ``partitions / len(relays)`` of them, give or take one. When a relay comes or
    goes most partitions change hands, which costs nothing: ownership is only ever a lock
    held for one transaction, and relays that briefly disagree contend for the same lock.
    """
    ordered = sorted(relays | {relay})
    me, n = ordered.index(relay), len(ordered)
    return tuple(range(me, partitions, n))


@attrs.frozen
class OutboxBacklog:
    """How far behind the relay is.

    Attributes:
        size: events committed but not yet published.
        oldest_age_s: seconds since the oldest of them was written, or ``None`` if none.
    """

    size: int
    oldest_age_s: float | None


class OutboxRelay:
    """Moves committed events from the ``events`` table to JetStream.

    No I/O in the constructor. Stop it before closing the bus it publishes with.

    Args:
        settings: ``direct_database_url`` (for the ``LISTEN`` connection),
            ``outbox_partitions`` and ``shutdown_timeout``.
        database: the runtime's pool; each batch runs in one of its connections.
        bus: an open :class:`EventBus`.
        batch_size: rows claimed per batch (1 to 2,000); two batches are in flight to
            JetStream at once, and up to 8 are marked per transaction.
        poll_interval: seconds between passes when no notification arrives (a fallback:
            a notification can be missed while the ``LISTEN`` connection reconnects).
        lease: seconds (at least 0.5) that bound a relay's hold on its partitions: a
            pass's transaction left idle this long is ended by PostgreSQL (so a stopped
            relay loses its partitions and row locks), a relay whose heartbeat is this
            old is no longer given home partitions, and a partition whose oldest event
            has waited this long is taken by any relay. The relay itself never sends or
            marks a batch from a pass older than this.
    """

    def __init__(
        self,
        settings: Settings,
        database: Database,
        bus: EventBus,
        *,
        batch_size: int = 1000,
        poll_interval: float = 1.0,
        lease: float = 10.0,
    ) -> None:
        if not 1 <= batch_size <= _MAX_BATCH:
            raise ValidationError(f"batch_size must be 1..{_MAX_BATCH}", field="batch_size")
        if not poll_interval > 0:
            raise ValidationError("poll_interval must be > 0", field="poll_interval")
        if not lease >= 0.5:
            raise ValidationError("lease must be >= 0.5 seconds", field="lease")
        self.settings = settings
        self._db = database
        self._bus = bus
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.lease = lease
        self.relay_id = uuid.uuid4().hex
        """This relay's id, as its ``LISTEN`` session announces it."""
        self.partitions = settings.outbox_partitions
        self._all = tuple(range(self.partitions))
        self.home: tuple[int, ...] = self._all
        """The partitions this relay publishes first (all of them until it sees others)."""
        self._members: frozenset[str] = frozenset()
        self._stale: tuple[int, ...] = ()
        self._watched = frozenset(self._all)
        self._next_members = 0.0
        self._next_probe = 0.0
        self._queries = query_file("outbox")
        self._wake: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self.published = 0
        """Events this relay published (acknowledged by JetStream) since it started."""
        self._last_error: str | None = None

    @property
    def relays(self) -> frozenset[str]:
        """The ids of the relays this one last saw alive, its own included."""
        return self._members

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start listening and relaying in the background. Idempotent."""
        if self.running:
            return
        self._stopping = False
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._wake.set()  # first pass at once: rows may be waiting from before
        self._listener = asyncio.create_task(self._listen(), name="wis2l-outbox-listen")
        self._task = asyncio.create_task(self._run(), name="wis2l-outbox-relay")
        _messaging.watch_outbox(self, self._db)  # the backlog and lag gauges (with an SDK)

    async def stop(self, timeout: float | None = None) -> None:
        """Finish the batch in hand (up to ``timeout``, default ``shutdown_timeout``), stop.

        Idempotent. A batch cut short is rolled back and published again by the next
        relay; JetStream drops the copies it already has.
        """
        self._stopping = True
        if self._stop is not None:
            self._stop.set()
        limit = self.settings.shutdown_timeout if timeout is None else timeout
        task, self._task = self._task, None
        if task is not None:
            await asyncio.wait({task}, timeout=limit)
            await cancel_and_wait(task)
        listener, self._listener = self._listener, None
        if listener is not None:
            await cancel_and_wait(listener)

    async def backlog(self) -> OutboxBacklog:
        """Count the unpublished events and the age of the oldest (for ``health()``).

        Raises:
            ServiceUnavailable: the database cannot be reached.
        """
        row = await self._db.fetch_one(self._queries["backlog"], {})
        assert row is not None
        return OutboxBacklog(size=int(row["size"]), oldest_age_s=row["oldest_age_s"])

    async def relay_once(self) -> int:
        """Run one pass now (one transaction, up to 8 batches) over every partition no
        other relay holds; return how many events were published and marked.

        Raises:
            ServiceUnavailable: PostgreSQL or NATS is down; nothing is marked that was
                not acknowledged.
        """
        return (await self._pass(self._all))[0]

    # -- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._wake is not None
        backoff = Backoff.reconnect()
        no_schema = Backoff(initial=1.0, cap=30.0, jitter=0.2)
        while not self._stopping:
            if not self._bus.ready:
                # NATS down: claim nothing; go on as soon as it is back (or on stop).
                await self._until(self._bus.wait_ready(), self.poll_interval)
                continue
            self._wake.clear()
            try:
                await self._drain()
            except Exception as exc:  # the relay must outlive any one failure
                missing = isinstance(exc, SchemaMissing)
                delay = no_schema.next() if missing else backoff.next()
                self._report(exc, delay, missing=missing)
                await self._until(asyncio.sleep(delay), None)
                continue
            if self._last_error is not None:
                log.info("outbox relay: working again")
                self._last_error = None
            backoff.reset()
            no_schema.reset()
            await self._until(self._wake.wait(), self.poll_interval)

    def _report(self, exc: Exception, delay: float, *, missing: bool) -> None:
        """Log a failure once; the same failure again is logged at DEBUG only."""
        text = str(exc)
        again = text == self._last_error
        self._last_error = text
        if missing:
            log.log(
                logging.DEBUG if again else logging.ERROR,
                "outbox relay: the events table is missing or out of date; run `wis2l db "
                "migrate` (or `await wis.migrate()`). Events are kept until then; retrying "
                "in %.0fs",
                delay,
                extra={"service": "database"},
            )
            return
        expected = isinstance(exc, Wis2lError | OSError | TimeoutError)
        # A database outage is logged once by the pool.
        pooled = isinstance(exc, ServiceUnavailable) and exc.service == "database" and self._db.down
        log.log(
            logging.DEBUG if again or pooled else logging.WARNING,
            "outbox relay: %s; retrying in %.1fs",
            exc,
            delay,
            exc_info=not (expected or again),
        )

    async def _until(self, aw: Awaitable[object], timeout: float | None) -> None:
        """Wait for ``aw``, at most ``timeout`` seconds, or until :meth:`stop`."""
        assert self._stop is not None
        waiters = {asyncio.ensure_future(aw), asyncio.ensure_future(self._stop.wait())}
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

    async def _drain(self) -> None:
        while not self._stopping and self._bus.ready:
            await self._refresh()  # before every pass: a busy relay never stops draining
            candidates = self.home + tuple(p for p in self._stale if p not in self.home)
            _, more, error = await self._pass(candidates)
            if error is not None:
                raise error
            if not more:
                return

    async def _refresh(self) -> None:
        """Every second or so: which relays are alive (so which partitions are home) and
        which partitions have waited longer than the lease (so anyone may take them)."""
        now = time.monotonic()
        if now >= self._next_members:
            self._next_members = now + min(1.0, self.lease / 4)
            rows = await self._db.fetch_all(self._queries["relays"], {"lease": self.lease})
            members = frozenset(str(r["relay"]) for r in rows) | {self.relay_id}
            if members != self._members:
                self._members = members
                self.home = home_partitions(self.relay_id, members, self.partitions)
                log.debug("outbox relay: %d relays, home %s", len(members), self.home)
        if now >= self._next_probe:
            self._next_probe = now + min(1.0, self.lease / 4)
            params = {"partitions": self.partitions, "lease": self.lease}
            rows = await self._db.fetch_all(self._queries["stale_partitions"], params)
            self._stale = tuple(int(r["part"]) for r in rows)
        self._watched = frozenset(self.home + self._stale)

    async def _pass(self, candidates: tuple[int, ...]) -> tuple[int, bool, Wis2lError | None]:
        """One transaction: lock the free ``candidates``, then claim, publish and mark up
        to ``_BATCHES_PER_TX`` batches of their rows (see :meth:`_publish`).

        Returns (events marked, whether rows were left, the error that stopped it).

        Not in pipeline mode: each statement goes with its Sync, so while the relay waits
        for NATS its session is "idle in transaction" and the lease's
        ``idle_in_transaction_session_timeout`` applies (within an unsynced pipeline the
        session counts as active and a stopped relay would keep its partitions).
        """
        if not candidates:
            return 0, False, None
        started = time.monotonic()
        async with self._db.connection() as conn:
            with map_errors():
                async with conn.transaction():
                    locked = await _fetch(
                        conn,
                        self._queries["lock_partitions"],
                        lease_ms=int(self.lease * 1000),
                        candidates=list(candidates),
                        lock_key=OUTBOX,
                    )
                    held: list[int] = locked[0]["held"]
                    if not held:
                        return 0, False, None
                    marked, more, error = await self._publish(conn, held, started)
        self.published += marked
        return marked, more, error

    async def _publish(
        self, conn: Connection, held: list[int], started: float
    ) -> tuple[int, bool, Wis2lError | None]:
        """Claim, send and mark batches of the ``held`` partitions, overlapping the work.

        Two batches are in flight at most. While batch N+1 is written to NATS (the
        relay's CPU), the connection waits for batch N's acks, marks N and claims N+2
        (PostgreSQL's CPU), so neither waits for the other. No batch is claimed once the
        pass is half a lease old (a slow server ends passes early instead of failing
        them), nor after a batch was not fully acknowledged.
        """
        part = {"held": held, "partitions": self.partitions, "limit": self.batch_size}
        rows = await self._claim(conn, part, [])
        acks = await self._send(rows, started)
        claimed = len(rows)
        upcoming = await self._claim(conn, part, rows) if self._more(rows, claimed, started) else []
        claimed += len(upcoming)
        marked, full, error = 0, False, None
        while acks is not None:
            settling = asyncio.create_task(
                self._settle_and_claim(
                    conn,
                    rows,
                    acks,
                    started=started,
                    part=part,
                    upcoming=upcoming,
                    claimed=claimed,
                    error=error,
                )
            )
            try:
                upcoming_acks = await self._send(upcoming, started)
            except asyncio.CancelledError:
                await cancel_and_wait(settling)
                raise
            except BaseException:
                await asyncio.wait({settling})  # the connection is in use until it ends
                if not settling.cancelled():
                    settling.exception()  # seen: the send's error is the one raised
                raise
            count, failed, after = await settling
            full = len(rows) == self.batch_size
            marked += count
            error = error or failed
            rows, acks, upcoming = upcoming, upcoming_acks, after
            claimed += len(after)
        return marked, full, error

    def _more(self, latest: list[_Row], claimed: int, started: float) -> bool:
        """Whether to claim another batch after ``latest`` in this pass."""
        return (
            len(latest) == self.batch_size
            and claimed < self.batch_size * _BATCHES_PER_TX
            and time.monotonic() - started < self.lease / 2
        )

    async def _claim(
        self, conn: Connection, part: dict[str, Any], in_flight: list[_Row]
    ) -> list[_Row]:
        """The next batch of the held partitions, except the rows ``in_flight``."""
        params = part | {"in_flight": [r[0] for r in in_flight]}
        async with conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute(self._queries["claim"].text, params, prepare=True)
            return await cur.fetchall()

    async def _settle_and_claim(
        self,
        conn: Connection,
        rows: list[_Row],
        acks: PendingAcks,
        *,
        started: float,
        part: dict[str, Any],
        upcoming: list[_Row],
        claimed: int,
        error: Wis2lError | None,
    ) -> tuple[int, Wis2lError | None, list[_Row]]:
        """Settle ``rows``; then, unless a batch failed, claim the batch after ``upcoming``
        (which is being sent meanwhile)."""
        count, failed = await self._settle(conn, rows, acks, started)
        if failed is None and error is None and self._more(upcoming, claimed, started):
            return count, None, await self._claim(conn, part, upcoming)
        return count, failed, []

    def _fence(self, started: float) -> None:
        """Refuse to go on with a pass older than the lease: PostgreSQL may have ended its
        transaction, and another relay may own its partitions now (a relay resumed after
        a stop). The rows are published again by their owner; JetStream drops copies."""
        if time.monotonic() - started > self.lease * 0.8:
            raise ServiceUnavailable(
                "outbox relay: the pass outlived its lease; its partitions may have moved",
                service="database",
            )

    async def _settle(
        self, conn: Connection, rows: list[_Row], acks: PendingAcks, started: float
    ) -> tuple[int, Wis2lError | None]:
        """Wait for ``rows``' acks and mark the acknowledged ones (in the transaction)."""
        results = await acks.wait(min(API_TIMEOUT, self.lease / 2))
        acked = [r for r, res in zip(rows, results, strict=True) if res is None]
        if acked:
            self._fence(started)
            params = {"seqs": [r[0] for r in acked], "oldest": min(r[5] for r in acked)}
            await conn.execute(self._queries["mark_published"].text, params, prepare=True)
            _messaging.relayed(acked, created=5)  # wis2l.outbox.published, publish_latency
        failures = [res for res in results if res is not None]
        return len(acked), (await self._failed(failures, len(rows)) if failures else None)

    async def _send(self, rows: list[_Row], started: float) -> PendingAcks | None:
        if not rows:
            return None
        self._fence(started)
        dumps = orjson.dumps
        batch = [
            EncodedEvent(subject, dumps(payload), id_, occurred_at, trace)
            for _, id_, subject, payload, occurred_at, _, trace in rows
        ]
        return await self._bus.send_encoded(batch)

    async def _failed(self, failures: list[BaseException], out_of: int) -> Wis2lError:
        first = failures[0]
        log.warning(
            "outbox relay: %d of %d events not acknowledged (%s: %s)",
            len(failures),
            out_of,
            type(first).__name__,
            first,
        )
        if isinstance(first, nats.js.errors.NoStreamResponseError):
            with contextlib.suppress(ServiceUnavailable):
                await self._bus.ensure_stream()  # NATS lost the stream: make it again
        return translate(first, "publish failed")

    def _concerns(self, payload: str) -> bool:
        """Whether a notification names a partition this relay publishes now (a home one,
        or one that anyone may take); one that names none (an older trigger) does."""
        try:
            key = int(payload)
        except ValueError:
            return True
        return key % self.partitions in self._watched

    async def _listen(self) -> None:
        assert self._wake is not None
        backoff = Backoff.reconnect()
        name = APPLICATION_PREFIX + self.relay_id
        beat = min(1.0, self.lease / 4)
        outage = Outage("database", log, name="outbox LISTEN connection")
        while not self._stopping:
            try:
                url = self.settings.direct_database_url
                conn = await connect_to(self.settings, url=url, application_name=name)
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self._wake.set()  # catch up on anything committed while not listening
                    backoff.reset()
                    outage.recovered()
                    while True:
                        async for note in conn.notifies(timeout=beat):
                            if self._concerns(note.payload):
                                self._wake.set()
                        # The heartbeat moves state_change, which the relays query reads.
                        # None while NATS is down: the others take this relay's partitions.
                        if self._bus.ready:
                            await conn.execute("SELECT 1")
            except Exception as exc:
                delay = backoff.next()
                if self._db.down:  # logged once by the pool
                    log.debug("outbox LISTEN connection: %s; reconnecting in %.1fs", exc, delay)
                else:
                    outage.failed(exc, "outbox LISTEN connection: %s; reconnecting", exc)
                await asyncio.sleep(delay)
