"""``wis2l_core.sync.Wis2l``: the runtime's repositories, caches, health and bus, synchronous.

The repositories and caches are generated from the asynchronous source
(:mod:`wis2l_core.sync.db`, :mod:`wis2l_core.sync.cache`) and run on psycopg's
synchronous pool and redis-py's synchronous client, in the calling thread. Writes record
their events in the outbox in the same transaction, as the asynchronous runtime's do.
What needs NATS itself (``bus.publish``, the outbox relay that moves committed events to
JetStream, the NATS health check) runs on a private event loop in a background thread
(:class:`~wis2l_core.sync._loop.BackgroundLoop`), never the caller's, so all of it works
in a script, a WSGI worker, a Django command and a Jupyter notebook alike.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType
from typing import Any, TypeVar

import attrs

from wis2l_core.catalogue import DomainEvent
from wis2l_core.config import Settings
from wis2l_core.db.errors import map_errors
from wis2l_core.db.migrate import _SCHEMA_QUERY, _shipped
from wis2l_core.db.pool import Database as AsyncDatabase
from wis2l_core.errors import SchemaMissing, ServiceUnavailable, StartupError
from wis2l_core.events.bus import EventBus
from wis2l_core.events.outbox import OutboxRelay
from wis2l_core.health import HealthChecker, HealthReport, secrets_of
from wis2l_core.sync._loop import BackgroundLoop
from wis2l_core.sync._pool import Database
from wis2l_core.sync._redis import RedisClient
from wis2l_core.sync.cache.builds import BuildCache
from wis2l_core.sync.cache.ratelimit import RateLimiter
from wis2l_core.sync.cache.sessions import SessionStore
from wis2l_core.sync.cache.store import Cache
from wis2l_core.sync.db.repositories import Repositories, Transaction

__all__ = ["SyncBus", "Wis2l"]

T = TypeVar("T")

log = logging.getLogger("wis2l_core.sync")

_LOOP_GRACE = 5.0
"""Seconds past a step's own budget that a call into the background loop may take."""


class SyncBus:
    """The event bus, synchronous: :meth:`publish` (subscribers need the asyncio runtime).

    Each call runs the asynchronous bus's method on the runtime's private loop and waits.
    """

    def __init__(self, bus: EventBus, loop: BackgroundLoop) -> None:
        self._bus = bus
        self._loop = loop

    @property
    def ready(self) -> bool:
        """True when connected to NATS and the stream is ensured."""
        return self._bus.ready

    def subject(self, event_type: str | type[DomainEvent] | DomainEvent) -> str:
        """The NATS subject of an event type (or event) in this runtime's namespace."""
        return self._bus.subject(event_type)

    def publish(self, event: DomainEvent) -> None:
        """Publish one event that has no database write and wait for JetStream's ack.

        Raises:
            ValidationError: ``event`` is not a well-formed event; nothing was sent.
            ServiceUnavailable: NATS is down, did not acknowledge in time, or the runtime
                is not started.
        """
        if not self._loop.running:
            raise ServiceUnavailable("nats: the runtime is not started", service="nats")
        self._loop.run(self._bus.publish(event))


class Wis2l(Repositories):
    """The wis2l-core runtime as plain methods, for scripts and synchronous apps.

    ``with Wis2l(settings) as wis:`` (or ``start()`` ... ``close()``) opens the pool,
    Redis, NATS and the outbox relay, and closes them again; both are idempotent. Every
    method blocks the calling thread and may be called from several threads at once.

    Args:
        settings: where the servers are; ``Settings.from_env()`` when omitted.
        relay: run the outbox relay (on the private loop), so the events of this
            runtime's writes reach JetStream; ``False`` when another process relays
            (``wis2l relay``, or an asynchronous app on the same database).
    """

    def __init__(self, settings: Settings | None = None, *, relay: bool = True) -> None:
        self.settings = settings if settings is not None else Settings.from_env()
        self._db = Database(self.settings)
        super().__init__(self._db)
        self.redis = RedisClient(self.settings)
        """The Redis connection the caches share."""
        self.cache = Cache(self.redis, "cache")
        """A generic cache: ``get``, ``set(ttl=)``, ``delete``, ``exists``."""
        self.sessions = SessionStore(self.redis)
        """User sessions (24 h)."""
        self.build_cache = BuildCache(self.redis)
        """Build artifact manifests (7 days)."""
        self.rate_limiter = RateLimiter(self.redis)
        """Atomic rate limiting in Redis."""
        self._loop = BackgroundLoop()
        self._bus = EventBus(self.settings)
        self.bus = SyncBus(self._bus, self._loop)
        """``bus.publish(event)``."""
        self._relay_wanted = relay
        self._relay: OutboxRelay | None = None
        self._relay_db: AsyncDatabase | None = None
        self._started_at = time.monotonic()
        self._started = False

    @property
    def database(self) -> Database:
        """The synchronous pool: ``fetch_one``, ``fetch_all``, ``fetch_val``, ``execute``,
        and ``connection()`` for anything else psycopg offers."""
        return self._db

    @property
    def started(self) -> bool:
        """True from the end of :meth:`start` to :meth:`close`."""
        return self._started

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Open the pool, Redis (lazily), NATS and the outbox relay. Idempotent.

        In production a critical service (``settings.critical_services``) that is down
        closes what was opened and raises ``StartupError``; otherwise it is logged and
        retried in the background, as the asynchronous runtime does.

        Raises:
            StartupError: production mode and a critical service cannot be reached.
        """
        if self._started:
            return
        critical = self.settings.critical_services if self.settings.is_production else set()
        failures: dict[str, str] = {}
        try:
            try:
                self._db.open(wait="database" in critical)
            except ServiceUnavailable as exc:
                failures["database"] = str(exc)
            self.redis.open()
            if "redis" in critical:
                try:
                    self.redis.ping()
                except ServiceUnavailable as exc:
                    failures["redis"] = str(exc)
            self._loop.start()
            try:
                self._loop.run(self._start_async(require_nats="nats" in critical))
            except ServiceUnavailable as exc:
                failures["nats"] = str(exc)
            if failures:
                what = "; ".join(f"{name}: {reason}" for name, reason in failures.items())
                raise StartupError(
                    f"cannot start, critical service(s) down: {what}", failures=failures
                )
        except BaseException:
            self._shutdown()
            raise
        self._started_at = time.monotonic()
        self._started = True

    async def _start_async(self, *, require_nats: bool) -> None:
        await self._bus.open(require=require_nats)
        if not self._relay_wanted:
            return
        settings = attrs.evolve(self.settings, db_pool_min_size=1, db_pool_max_size=2)
        self._relay_db = AsyncDatabase(settings)
        await self._relay_db.open(wait=False)
        self._relay = OutboxRelay(settings, self._relay_db, self._bus)
        await self._relay.start()

    def close(self) -> None:
        """Stop the relay, disconnect NATS, close Redis and the pool. Idempotent."""
        if not self._started:
            return
        self._started = False
        self._shutdown()

    stop = close
    """The asynchronous runtime's name for :meth:`close`."""

    def _shutdown(self) -> None:
        budget = self.settings.shutdown_timeout
        if self._loop.running:
            try:
                self._loop.run(self._stop_async(budget), timeout=budget + _LOOP_GRACE)
            except Exception:
                log.exception("error while stopping the event bus and the outbox relay")
            self._loop.stop()
        for name, step in (("redis", self.redis.close), ("database", self._db.close)):
            try:
                step()
            except Exception:
                log.exception("error while stopping the %s", name, extra={"step": name})

    async def _stop_async(self, budget: float) -> None:
        relay, self._relay = self._relay, None
        db, self._relay_db = self._relay_db, None
        if relay is not None:
            await relay.stop(budget)
        await self._bus.close(budget)
        if db is not None:
            await db.close()

    def __enter__(self) -> Wis2l:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def migrate(self) -> list[str]:
        """Apply pending migrations (as ``wis2l db migrate``); return the names applied.

        Works before :meth:`start` too, so a script can migrate, then start.
        """
        from wis2l_core.db.migrate import apply_migrations

        s = self.settings
        return self._run_async(
            apply_migrations(
                s.direct_database_url,
                sources=s.migrations,
                lock_timeout=s.migrate_lock_timeout,
                connect_timeout=s.db_connect_timeout,
            )
        )

    def _run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the private loop, or on a loop of its own before :meth:`start`."""
        if self._loop.running:
            return self._loop.run(coro)
        once = BackgroundLoop("wis2l-sync-once")
        once.start()
        try:
            return once.run(coro)
        finally:
            once.stop()

    # -- transactions ----------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Bind the repositories to one transaction: all or nothing.

        ``with wis.transaction() as tx:``; if the block raises, everything is rolled back.
        The events its writes record reach JetStream only after it commits.

        Raises:
            ServiceUnavailable: the database cannot be reached.
        """
        with self._db.connection() as conn:
            tx = Transaction(self._db, conn)
            try:
                with map_errors(), conn.transaction():
                    yield tx
            finally:
                tx._end()

    # -- health ----------------------------------------------------------------------------

    def health(self, *, critical_only: bool = False) -> HealthReport:
        """Check the database, Redis, NATS and the outbox at once, each within
        ``settings.health_timeout``; works in any state (before start: ``unhealthy``).

        Args:
            critical_only: run only the critical checks (readiness probes).
        """
        settings = self.settings
        checker = HealthChecker(
            timeout=settings.health_timeout,
            started_at=self._started_at,
            secrets=secrets_of(settings),
        )
        critical = settings.critical_services

        async def database() -> Mapping[str, Any] | None:
            return await asyncio.to_thread(self._database_check)

        async def redis() -> Mapping[str, Any] | None:
            return await asyncio.to_thread(self.redis.ping)

        async def nats() -> Mapping[str, Any] | None:
            await self._bus.ping()
            return None

        checker.add("database", database, critical="database" in critical)
        checker.add("redis", redis, critical="redis" in critical)
        checker.add("nats", nats, critical="nats" in critical)
        relay = self._relay
        if relay is not None:
            from wis2l_core.health._checks import outbox_check

            checker.add("outbox", lambda: outbox_check(relay))
        return self._run_async(checker.run(critical_only=critical_only))

    def _database_check(self) -> Mapping[str, Any]:
        """The schema check of ``wis2l_core.db.migrate.check_schema``, on the sync pool."""
        with self._db.connection() as conn:
            row = conn.execute(_SCHEMA_QUERY, prepare=True).fetchone()
        if row is None:  # pragma: no cover - the query always returns one row
            raise ServiceUnavailable("database: no answer to the schema check", service="database")
        missing = [name for name in _shipped() if name not in row["applied"]]
        if missing:
            raise SchemaMissing(
                f"{len(missing)} migration(s) not applied, from {missing[0]}:"
                " run `wis2l db migrate`",
                migration=missing[0],
            )
        stats = self._db.pool.get_stats()
        return {
            "pool_size": stats.get("pool_size", 0),
            "pool_available": stats.get("pool_available", 0),
            "requests_waiting": stats.get("requests_waiting", 0),
        }
