"""``Wis2l``: the one object an app holds. It starts, checks and stops everything.

Start order: PostgreSQL pool -> Redis -> NATS (and the stream) -> outbox relay ->
subscribers. ``stop()`` undoes it (the relay first, so nothing is published on a closing
connection; then the subscribers drain and NATS disconnects; then Redis and the pool):
running handlers get ``shutdown_timeout`` in all, closing gets :data:`CLOSE_GRACE` more,
and every step runs even when another fails or hangs. No I/O happens in the
constructor.

In development a service that is down at start is logged and retried in the background.
In production a critical service (``settings.critical_services``) that is down at start
makes ``start()`` close what it opened and raise :class:`StartupError` naming every
critical service that failed; optional services behave as in development.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from os import PathLike
from types import TracebackType
from typing import TYPE_CHECKING, Any

from wis2l_core.cache import BuildCache, Cache, RateLimiter, RedisClient, SessionStore, TokenCache
from wis2l_core.config import Settings
from wis2l_core.db.connect import connect_to
from wis2l_core.db.errors import map_errors
from wis2l_core.db.migrate import apply_migrations
from wis2l_core.db.pool import Database
from wis2l_core.db.repositories import Repositories, Transaction
from wis2l_core.errors import SchemaMissing, ServiceUnavailable, StartupError, Wis2lError
from wis2l_core.events.bus import EventBus
from wis2l_core.events.handlers import register_seed_subscribers
from wis2l_core.events.outbox import OutboxRelay
from wis2l_core.health import HealthChecker, HealthReport, describe_error, secrets_of
from wis2l_core.telemetry._db import transaction_span

if TYPE_CHECKING:
    from wis2l_core.auth.access import Access
    from wis2l_core.auth.identity import Identity

__all__ = ["Repositories", "Transaction", "Wis2l"]  # the first two live in db.repositories

log = logging.getLogger("wis2l_core.runtime")

CLOSE_GRACE = 4.0
"""Seconds ``stop()`` may run past ``shutdown_timeout`` to close connections; a step still
running then is cut short (so 25 s + 4 s stays under Kubernetes' default 30 s)."""
STEP_MIN = 0.5
"""Seconds each later step still gets once that deadline has passed, so every step runs."""
_PROBE_LIMIT = 3.0
"""At most this many seconds to find out why the pool could not connect."""


class Wis2l(Repositories):
    """The wis2l-core runtime: repositories, caches, the event bus, health and lifecycle.

    ``start()``/``stop()`` (or ``async with``) bring everything up and down; both are
    idempotent and safe to call from several tasks at once. A stopped runtime can be
    started again.

    Args:
        settings: where the servers are; ``Settings.from_env()`` when omitted.
        seed_subscribers: register the platform's default subscribers (event logging and
            token-cache invalidation on ``TokenUpdated``/``TokensSynced``).
    """

    def __init__(self, settings: Settings | None = None, *, seed_subscribers: bool = True) -> None:
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
        self.token_cache = TokenCache(self.redis)
        """Design tokens by project (1 h), invalidated by token events."""
        self.rate_limiter = RateLimiter(self.redis)
        """Atomic rate limiting in Redis."""
        self.bus = EventBus(self.settings)
        """Typed events over NATS JetStream: ``publish`` and ``subscribe``."""
        self.relay = OutboxRelay(self.settings, self._db, self.bus)
        """The outbox relay: moves committed events from ``events`` to JetStream."""
        if seed_subscribers:
            register_seed_subscribers(self.bus, self.token_cache)
        self._checker: HealthChecker | None = None
        self._identity: Identity | None = None
        self._access: Access | None = None
        self._lock: asyncio.Lock | None = None  # made on first use, inside the loop
        self._started = False
        self._starting = False
        self._stopping = False

    @property
    def database(self) -> Database:
        """The PostgreSQL pool: run your own SQL with ``fetch_one``, ``fetch_all``,
        ``fetch_val`` and ``execute``, or borrow a connection with ``connection()``."""
        return self._db

    @property
    def identity(self) -> Identity:
        """Sign-in with nocturnaID (or any OpenID Connect issuer): ``authenticate(token)``
        and ``sign_in(token)``. Needs the ``auth`` extra and ``WIS2L_OIDC_ISSUER``.

        Raises:
            ConfigError: no issuer is configured, or the ``auth`` extra is missing.
        """
        if self._identity is None:
            from wis2l_core.auth.identity import Identity

            self._identity = Identity(self.settings, self.users, self.sessions)
        return self._identity

    @property
    def access(self) -> Access:
        """Role-based access control: ``require(principal, action, project=)`` and
        ``can(...)`` over the permission table in the identity guide."""
        if self._access is None:
            from wis2l_core.auth.access import Access

            self._access = Access()
        return self._access

    @property
    def started(self) -> bool:
        """True from the end of ``start()`` to the end of ``stop()``."""
        return self._started

    @property
    def stopping(self) -> bool:
        """True unless started and not stopping: it turns true the moment ``stop()`` is
        called (or ``run_until_signal()`` gets its signal), so readiness fails at once."""
        return self._stopping or not self._started

    def _guard(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    # -- start -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the pool, Redis and NATS, ensure the stream, start the relay and subscribers.

        Idempotent: a second call (also a concurrent one) returns once the runtime is up.
        A service that is down is logged and retried in the background, except a critical
        one (``settings.critical_services``) in production: then everything opened so far
        is closed again and ``StartupError`` names each critical service that failed.

        Raises:
            StartupError: production mode and a critical service cannot be reached.
        """
        if self._started:
            return
        async with self._guard():
            if not self._started:  # a concurrent start() finished while this one waited
                self._starting, self._stopping = True, False
                try:
                    await self._start()
                finally:
                    self._starting = False

    async def _start(self) -> None:
        began = time.monotonic()
        critical = self.settings.critical_services if self.settings.is_production else set()
        failures: dict[str, str] = {}
        try:
            database_up = await self._open_database(failures, required="database" in critical)
            await self._open_redis(
                failures, required="redis" in critical, probe="redis" in critical or not failures
            )
            if "nats" in critical or not failures:  # no need to wait for NATS to fail anyway
                await self._open_nats(failures, required="nats" in critical)
            if failures:
                what = "; ".join(f"{name}: {reason}" for name, reason in failures.items())
                raise StartupError(
                    f"cannot start, critical service(s) down: {what}", failures=failures
                )
            if database_up:
                await self._ensure_partitions()
            if self.settings.outbox_relay:  # else `wis2l relay` processes publish
                await self.relay.start()
            await self.bus.start_subscribers()
        except BaseException:
            await self._shutdown()
            raise
        self._checker = HealthChecker.for_services(
            self.settings,
            database=self._db,
            redis=self.redis,
            nats=self.bus,
            outbox=self.relay,
            started_at=began,
        )
        self._started = True
        took = time.monotonic() - began
        log.info(
            "wis2l-core started in %.2f s",
            took,
            extra={"environment": self.settings.environment.value, "seconds": took},
        )

    async def _ensure_partitions(self) -> None:
        """Have the audit log's month partitions ready ahead (one round trip when they are).

        Never fails start: a database not migrated yet, or a table too busy to lock within
        a second, is left to the next start or ``wis2l db prune``."""
        from wis2l_core.db.retention import ensure_partitions

        try:
            async with self._db.connection() as conn:
                await ensure_partitions(conn, lock_timeout=1.0)
        except SchemaMissing:
            log.debug("events is not partitioned yet: run `wis2l db migrate`")
        except Wis2lError as exc:
            log.warning("could not create the audit log's next partitions: %s", exc)

    async def _open_database(self, failures: dict[str, str], *, required: bool) -> bool:
        """Open the pool; ``True`` if the database answered.

        Required: wait up to the connect timeout for it. Otherwise go on at the pool's
        first failed attempt: the pool logs the outage once ("database unreachable at
        start: <reason>"), keeps reconnecting, and calls fail at once until it answers.
        """
        if not required:
            await self._db.open(wait=False)
            return await self._db.first_answer(self.settings.db_connect_timeout + 1)
        try:
            await self._db.open(wait=True)
            return True
        except ServiceUnavailable as exc:
            failures["database"] = await self._database_reason(exc)
            return False

    async def _database_reason(self, exc: ServiceUnavailable) -> str:
        """The pool only says it timed out; one direct connection tells why."""
        settings = self.settings
        limit = min(max(settings.db_connect_timeout, 1.0), _PROBE_LIMIT)
        try:
            async with asyncio.timeout(limit):
                conn = await connect_to(settings, timeout=limit)
        except TimeoutError:
            return f"no answer within {limit:g} s"
        except ServiceUnavailable as probe:  # the driver's own words, as the pool's log
            return self._reason(probe.__cause__ or probe)
        except OSError as probe:
            return self._reason(probe)
        await conn.close()
        return self._reason(exc)  # reachable now: report what the pool saw

    async def _open_redis(self, failures: dict[str, str], *, required: bool, probe: bool) -> None:
        await self.redis.open()  # makes no connection: the caches connect on use
        if not probe:
            return
        limit = self.settings.health_timeout or None
        try:
            async with asyncio.timeout(limit):
                await self.redis.ping()  # a failure is logged once by the client
            return
        except TimeoutError as exc:
            reason = f"no answer within {limit or 0:g} s"
            self.redis.report_failure(exc, op="ping")  # hung: skip it until it answers
        except ServiceUnavailable as exc:
            reason = self._reason(exc, "redis")
        if required:
            failures["redis"] = reason

    async def _open_nats(self, failures: dict[str, str], *, required: bool) -> None:
        try:  # when not required, a NATS that is down is logged and retried by the bus
            await self.bus.open(require=required)
        except ServiceUnavailable as exc:
            failures["nats"] = self._reason(exc, "nats")

    def _reason(self, exc: BaseException, service: str = "") -> str:
        """A short, secret-free reason for ``StartupError.failures`` and the logs."""
        text = describe_error(exc, secrets_of(self.settings))
        text = text.removeprefix(f"{ServiceUnavailable.__name__}: ")
        return text.removeprefix(f"{service}: ") if service else text

    # -- stop ------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop everything ``start()`` began. Idempotent; waits for a ``start()`` under way.

        :attr:`stopping` turns true at once. Then, within ``settings.shutdown_timeout``
        for the whole: the outbox relay finishes its batch in hand, the subscribers stop
        fetching and their running handlers finish (those still running at the deadline
        are cancelled; their messages, not acknowledged, are delivered again later), NATS
        disconnects, Redis and the pool close. A step still running :data:`CLOSE_GRACE`
        seconds past the budget is cut short. Each step runs even when an earlier one
        failed or was cut short (it gets at least :data:`STEP_MIN` seconds); failures
        are logged, not raised. If the task running ``stop()`` is cancelled, the
        remaining steps still run, then the cancellation propagates.
        """
        if not (self._started or self._starting):
            return
        self._stopping = True
        async with self._guard():
            if not self._started:
                return
            began = time.monotonic()
            try:
                await self._shutdown()
            finally:
                self._started = False
                took = time.monotonic() - began
                log.info("wis2l-core stopped in %.2f s", took, extra={"seconds": took})

    async def _shutdown(self) -> None:
        loop = asyncio.get_running_loop()
        budget = loop.time() + self.settings.shutdown_timeout  # for running handlers
        hard = budget + CLOSE_GRACE  # for everything

        def left() -> float:
            return max(0.0, budget - loop.time())

        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("outbox relay", lambda: self.relay.stop(left())),
            ("event bus", lambda: self.bus.close(left())),
            ("redis", self.redis.aclose),
            ("database", lambda: self._db.close(max(left(), STEP_MIN))),
        ]
        cancelled: asyncio.CancelledError | None = None
        for name, step in steps:
            limit = max(hard - loop.time(), STEP_MIN)
            cutoff = asyncio.timeout(limit)
            try:
                async with cutoff:
                    await step()
            except asyncio.CancelledError as exc:
                cancelled = cancelled or exc
                log.warning("stop cancelled while stopping the %s; stopping the rest", name)
            except Exception:
                if cutoff.expired():
                    log.error(
                        "stopping the %s took more than %.1f s; cut short",
                        name,
                        limit,
                        extra={"step": name},
                    )
                else:
                    log.exception("error while stopping the %s", name, extra={"step": name})
        if cancelled is not None:
            raise cancelled

    async def __aenter__(self) -> Wis2l:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def run_until_signal(
        self, signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
    ) -> None:
        """Start, wait for SIGTERM or SIGINT, then stop cleanly: a worker's whole ``main``.

        ``asyncio.run(wis.run_until_signal())`` returns normally after the signal, so the
        process exits 0. Readiness (:attr:`stopping`) turns false when the signal arrives.
        The handlers stay installed until ``stop()`` returns, so a second signal cannot
        kill the drain (it is logged); they are removed afterwards. A signal during
        ``start()`` stops the runtime as soon as it is up.

        Args:
            signals: the signals that stop the runtime.

        Raises:
            StartupError: ``start()`` failed (see :meth:`start`).
            RuntimeError: not called from the main thread, where signals are delivered.
        """
        loop = asyncio.get_running_loop()
        received = asyncio.Event()
        caught: list[signal.Signals] = []

        def on_signal(sig: signal.Signals) -> None:
            if caught:
                log.warning(
                    "%s received while stopping; running handlers still get up to %g s",
                    sig.name,
                    self.settings.shutdown_timeout,
                    extra={"signal": sig.name},
                )
                return
            caught.append(sig)
            self._stopping = True
            received.set()

        remove = _install_signal_handlers(loop, signals, on_signal)
        try:
            await self.start()
            if received.is_set():  # arrived during start, before start reset the flag
                self._stopping = True
            await received.wait()
            log.info("%s received; stopping", caught[0].name, extra={"signal": caught[0].name})
        finally:
            try:  # after the signal, and also when start() failed or this task was cancelled
                await self.stop()
            finally:
                remove()

    # -- health ----------------------------------------------------------------------------

    async def health(self, *, critical_only: bool = False) -> HealthReport:
        """Check every service at once, each within ``settings.health_timeout``.

        Works in any state (before start, the pool check fails: ``unhealthy``).

        Args:
            critical_only: run only the critical checks (readiness probes).
        """
        checker = self._checker
        if checker is None:
            checker = HealthChecker.for_services(
                self.settings,
                database=self._db,
                redis=self.redis,
                nats=self.bus,
                outbox=self.relay,
            )
        return await checker.run(critical_only=critical_only)

    async def migrate(self) -> list[str]:
        """Apply pending migrations (as ``wis2l db migrate``); return the names applied.

        The library's first, then each app folder of ``settings.migrations``
        (``WIS2L_MIGRATIONS``), whose names come back as ``<source>/<stem>``.
        """
        return await apply_migrations(
            self.settings.direct_database_url,
            sources=self.settings.migrations,
            lock_timeout=self.settings.migrate_lock_timeout,
            connect_timeout=self.settings.db_connect_timeout,
        )

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """Bind the repositories to one transaction: all or nothing.

        The transaction also runs your own SQL (``tx.fetch_one``, ``tx.execute`` ...,
        or ``tx.connection``). If the block raises, or its task is cancelled, everything
        is rolled back and the connection goes back to the pool (a connection cut off
        mid-statement is closed and replaced instead).

        Raises:
            ServiceUnavailable: the database cannot be reached.
            Wis2lError: a statement in the block was cancelled before it finished (e.g.
                by an ``asyncio.timeout`` the block caught): the transaction is rolled
                back rather than committed half done.
        """
        with transaction_span():  # the block's statements are its children
            async with self._db.connection() as conn:
                tx = Transaction(self._db, conn)
                try:
                    with map_errors():
                        async with conn.transaction():
                            yield tx
                            if self._db.interrupted(conn):
                                # A cancellation inside the block (e.g. an asyncio.timeout
                                # the block caught) cut a statement short: never commit
                                # half of it.
                                raise Wis2lError(
                                    "the transaction was rolled back: a statement in it was "
                                    "cancelled (e.g. by a timeout) before it finished"
                                )
                finally:
                    tx._end()

    @classmethod
    @asynccontextmanager
    async def embedded(
        cls, data_dir: str | PathLike[str] | None = None, **overrides: Any
    ) -> AsyncIterator[Wis2l]:
        """Start an embedded PostgreSQL, Valkey and NATS, migrate, and yield a started runtime.

        Leaving the block stops the runtime and the servers. Needs the ``embedded`` extra.

        Args:
            data_dir: keep the servers' data here between runs; a temporary directory
                (removed at the end) when omitted.
            overrides: :class:`Settings` fields to change, e.g. ``namespace="demo"``.
                The stack's dev issuer is used, with its role claim on, unless
                ``oidc_issuer`` names another; then the role claim is on only when
                ``oidc_role_claim`` is given too.
        """
        try:
            from wis2l_core.dev import EmbeddedStack
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise StartupError(
                "Wis2l.embedded() needs the embedded extra: pip install 'wis2l-core[embedded]'"
            ) from exc
        stack = EmbeddedStack(data_dir)
        await asyncio.to_thread(stack.start)
        try:
            dev_issuer = None if stack.issuer is None else stack.issuer.issuer
            if overrides.get("oidc_issuer", dev_issuer) != dev_issuer:
                overrides.setdefault("oidc_role_claim", None)  # only the dev issuer sets roles
            runtime = cls(stack.settings(**overrides))
            await runtime.migrate()
            async with runtime:
                yield runtime
        finally:
            await asyncio.to_thread(stack.stop)


def _install_signal_handlers(
    loop: asyncio.AbstractEventLoop,
    signals: Iterable[signal.Signals],
    callback: Callable[[signal.Signals], None],
) -> Callable[[], None]:
    """Call ``callback(sig)`` in the loop on each signal; return what removes the handlers.

    Raises:
        RuntimeError: not in the main thread.
    """
    installed: list[signal.Signals] = []
    previous: dict[signal.Signals, Any] = {}

    def remove() -> None:
        for sig in installed:
            loop.remove_signal_handler(sig)
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def forward(signum: int, _frame: object) -> None:
        loop.call_soon_threadsafe(callback, signal.Signals(signum))

    try:
        for sig in signals:
            try:
                loop.add_signal_handler(sig, callback, sig)
                installed.append(sig)
            except NotImplementedError:  # Windows' loops: a plain handler that hands over
                previous[sig] = signal.signal(sig, forward)
    except (RuntimeError, ValueError) as exc:
        remove()
        raise RuntimeError(f"run_until_signal() must run in the main thread: {exc}") from exc
    return remove
