"""Health checks: run every check at once, each bounded by its own timeout, and classify.

A check is a zero-argument coroutine function that returns a mapping of details (or
``None``) and raises when the service is not healthy. :class:`HealthChecker` runs its checks
concurrently and folds them into a :class:`HealthReport`:

- ``ok``: every check passed;
- ``degraded``: every critical check passed, an optional one failed (HTTP 200);
- ``unhealthy``: a critical check failed (HTTP 503).

A hung server cannot make :meth:`HealthChecker.run` slower than the timeout: each check is
cancelled when its time is up, and a check that does not let go even then is left to
finish in the background while the report goes out. Error messages are short and scrubbed
of passwords, so a report can be served to a load balancer as is.

The check functions take small protocols (:class:`Pingable`, :class:`HasBacklog`), so this
module needs neither the cache nor the events package.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from importlib.metadata import PackageNotFoundError, version
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlsplit

import attrs

if TYPE_CHECKING:
    from wis2l_core.config import Settings
    from wis2l_core.db.pool import Database

__all__ = [
    "Backlog",
    "Check",
    "CheckFailed",
    "CheckResult",
    "HasBacklog",
    "HealthChecker",
    "HealthReport",
    "HealthStatus",
    "Pingable",
    "database_check",
    "describe_error",
    "outbox_check",
    "ping_check",
]

log = logging.getLogger("wis2l_core.health")

Check = Callable[[], Awaitable[Mapping[str, Any] | None]]
"""A health check: returns details (or ``None``) when healthy, raises when not."""

MAX_ERROR_LENGTH = 200
"""Error messages in a report are cut to this many characters."""

_GRACE = 0.02
"""Seconds a cancelled check gets to let go before the report goes out without it."""


class HealthStatus(enum.StrEnum):
    """The overall verdict of a :class:`HealthReport`."""

    OK = "ok"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


@attrs.frozen
class CheckResult:
    """The outcome of one check.

    Attributes:
        name: the check's name, e.g. ``"database"``.
        healthy: whether it passed within its timeout.
        critical: whether its failure makes the report ``unhealthy``.
        latency_ms: how long it took (about the timeout when it timed out).
        error: a short message without secrets when it failed, else ``None``.
        details: extra facts the check reported (e.g. the outbox backlog), possibly empty.
    """

    name: str
    healthy: bool
    critical: bool
    latency_ms: float
    error: str | None = None
    details: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping, hash=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data: ``healthy``, ``critical``, ``latency_ms``, ``error``, and
        ``details`` when there are any."""
        data: dict[str, Any] = {
            "healthy": self.healthy,
            "critical": self.critical,
            "latency_ms": round(self.latency_ms, 2),
            "error": self.error,
        }
        if self.details:
            data["details"] = dict(self.details)
        return data


@attrs.frozen
class HealthReport:
    """The result of ``await wis.health()``.

    Attributes:
        status: ``ok``, ``degraded`` or ``unhealthy``.
        checks: the result of each check, by name, in the order they were added.
        uptime_s: seconds since the runtime started.
        version: the installed wis2l-core version.
    """

    status: HealthStatus
    checks: Mapping[str, CheckResult] = attrs.field(converter=_frozen_mapping, hash=False)
    uptime_s: float
    version: str

    @property
    def http_status(self) -> int:
        """200 when ``ok`` or ``degraded``, 503 when ``unhealthy``."""
        return 503 if self.status is HealthStatus.UNHEALTHY else 200

    @property
    def failed(self) -> tuple[str, ...]:
        """The names of the checks that failed."""
        return tuple(name for name, result in self.checks.items() if not result.healthy)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data, as served on ``/health``::

        {"status": "ok", "uptime_s": 12.5, "version": "0.1.0",
         "checks": {"database": {"healthy": true, "critical": true,
                                 "latency_ms": 1.2, "error": null}, ...}}
        """
        return {
            "status": self.status.value,
            "uptime_s": round(self.uptime_s, 3),
            "version": self.version,
            "checks": {name: result.to_dict() for name, result in self.checks.items()},
        }


class CheckFailed(Exception):
    """Raised by a check that reached its service but judges it unhealthy.

    Its message is the report's ``error`` as is (no exception type in front), and its
    ``details`` still show in the report.

    Args:
        message: what is wrong, e.g. ``"oldest unpublished event is 95 s old"``.
        details: facts to report with the failure.
    """

    def __init__(self, message: str, *, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details: Mapping[str, Any] = dict(details or {})


class Pingable(Protocol):
    """A client that can check its server (``RedisClient``, the event bus)."""

    async def ping(self) -> object:
        """Return (details or ``None``) when the server answers; raise when not."""
        ...


class Backlog(Protocol):
    """The outbox backlog: events written but not yet published."""

    @property
    def size(self) -> int:
        """How many events wait."""
        ...

    @property
    def oldest_age_s(self) -> float | None:
        """Seconds the oldest one has waited, ``None`` when none wait."""
        ...


class HasBacklog(Protocol):
    """The outbox relay, seen from the health check."""

    async def backlog(self) -> Backlog:
        """Measure the backlog."""
        ...


async def database_check(database: Database) -> Mapping[str, Any] | None:
    """Run ``SELECT 1`` on a pooled connection; report the pool's occupancy.

    Raises:
        ServiceUnavailable: the pool is not open or the database does not answer.
    """
    async with database.connection() as conn:
        await conn.execute("SELECT 1")
    stats = database.pool.get_stats()
    return {
        "pool_size": stats.get("pool_size", 0),
        "pool_available": stats.get("pool_available", 0),
        "requests_waiting": stats.get("requests_waiting", 0),
    }


async def ping_check(target: Pingable) -> Mapping[str, Any] | None:
    """Ping ``target``; its answer becomes the details when it is a mapping."""
    answer = await target.ping()
    return answer if isinstance(answer, Mapping) else None


async def outbox_check(relay: HasBacklog, *, max_age: float = 60.0) -> Mapping[str, Any]:
    """Measure the outbox backlog; fail when the oldest waiting event is too old.

    Args:
        relay: the outbox relay.
        max_age: seconds an unpublished event may wait before the check fails.

    Raises:
        CheckFailed: the oldest unpublished event waited longer than ``max_age``.
    """
    backlog = await relay.backlog()
    age = backlog.oldest_age_s
    details = {"size": backlog.size, "oldest_age_s": None if age is None else round(age, 3)}
    if age is not None and age > max_age:
        raise CheckFailed(
            f"oldest unpublished event waited {age:.0f} s (limit {max_age:g} s), "
            f"{backlog.size} waiting",
            details=details,
        )
    return details


_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:@/\s]*):\S*@")
_KEYWORD_SECRET = re.compile(
    r"(?i)(?P<key>password|passwd|pwd|secret|token)(?P<sep>\s*[=:]\s*)"
    r"(?:'[^']*'|\"[^\"]*\"|[^\s,;&]+)"
)


def describe_error(exc: BaseException, secrets: Iterable[str] = ()) -> str:
    """A one-line message for ``exc``: ``"Type: message"``, scrubbed and cut short.

    URL passwords (``scheme://user:***@host``), ``password=...``-style values and every
    string in ``secrets`` are replaced by ``***`` before the message is cut to
    :data:`MAX_ERROR_LENGTH` characters.
    """
    text = " ".join(str(exc).split())
    if not isinstance(exc, CheckFailed):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return _scrub(text, secrets)


def _scrub(text: str, secrets: Iterable[str]) -> str:
    text = _URL_PASSWORD.sub(r"\g<head>:***@", text)
    text = _KEYWORD_SECRET.sub(r"\g<key>\g<sep>***", text)
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 3:
            text = text.replace(secret, "***")
    if len(text) > MAX_ERROR_LENGTH:
        text = text[: MAX_ERROR_LENGTH - 3] + "..."
    return text


def secrets_of(settings: Settings) -> tuple[str, ...]:
    """The passwords (and NATS tokens) in the settings' URLs, raw and percent-decoded."""
    found: set[str] = set()
    for url in (settings.database_url, settings.redis_url, *settings.nats_urls):
        try:
            parts = urlsplit(url)
        except ValueError:
            continue
        secret = parts.password
        if secret is None and url.startswith(("nats", "tls", "ws")):
            secret = parts.username  # nats://TOKEN@host
        if secret:
            found.update({secret, unquote(secret)})
    return tuple(found)


@functools.cache
def package_version() -> str:
    """The installed wis2l-core version (``"unknown"`` when not installed)."""
    try:
        return version("wis2l-core")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


def _str_tuple(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


@attrs.frozen
class _Spec:
    check: Check
    critical: bool
    timeout: float | None


@attrs.define(eq=False)
class HealthChecker:
    """Named checks, run all at once by :meth:`run` into a :class:`HealthReport`.

    No I/O and no asyncio objects until :meth:`run`, so the runtime can build it in its
    constructor.

    Args:
        timeout: default seconds each check may take; 0 means no limit.
        started_at: ``time.monotonic()`` when the runtime started (for ``uptime_s``).
        secrets: strings to scrub from error messages besides URL passwords (see
            :func:`secrets_of`).
    """

    timeout: float = 2.0
    started_at: float = attrs.field(factory=time.monotonic)
    secrets: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    _checks: dict[str, _Spec] = attrs.field(factory=dict, init=False, repr=False)
    _stragglers: set[asyncio.Task[CheckResult]] = attrs.field(factory=set, init=False, repr=False)
    _failing: set[str] = attrs.field(factory=set, init=False, repr=False)

    @classmethod
    def for_services(
        cls,
        settings: Settings,
        *,
        database: Database | None = None,
        redis: Pingable | None = None,
        nats: Pingable | None = None,
        outbox: HasBacklog | None = None,
        outbox_max_age: float = 60.0,
        started_at: float | None = None,
    ) -> HealthChecker:
        """The runtime's checks: ``database``, ``redis``, ``nats`` and ``outbox``.

        Each is added when its object is given; ``settings.critical_services`` says which
        are critical (the outbox never is), ``settings.health_timeout`` bounds each.

        Args:
            settings: timeout, critical services and the URLs whose secrets are scrubbed.
            database: the pool, checked with ``SELECT 1``.
            redis: the Redis client, pinged.
            nats: the event bus, pinged.
            outbox: the outbox relay, whose backlog is measured.
            outbox_max_age: seconds the oldest unpublished event may wait before the
                outbox check fails (the report turns ``degraded``).
            started_at: ``time.monotonic()`` at start; now when omitted.
        """
        checker = cls(
            timeout=settings.health_timeout,
            started_at=time.monotonic() if started_at is None else started_at,
            secrets=secrets_of(settings),
        )
        critical = settings.critical_services
        if database is not None:
            checker.add(
                "database",
                functools.partial(database_check, database),
                critical="database" in critical,
            )
        if redis is not None:
            checker.add("redis", functools.partial(ping_check, redis), critical="redis" in critical)
        if nats is not None:
            checker.add("nats", functools.partial(ping_check, nats), critical="nats" in critical)
        if outbox is not None:
            checker.add("outbox", functools.partial(outbox_check, outbox, max_age=outbox_max_age))
        return checker

    @property
    def names(self) -> tuple[str, ...]:
        """The names of the checks, in the order they run and report."""
        return tuple(self._checks)

    def add(
        self, name: str, check: Check, *, critical: bool = False, timeout: float | None = None
    ) -> None:
        """Add (or replace) the check called ``name``.

        Args:
            name: its key in the report.
            check: a coroutine function returning details or ``None``, raising on failure.
            critical: whether its failure makes the report ``unhealthy``.
            timeout: its own limit in seconds; the checker's ``timeout`` when omitted.
        """
        self._checks[name] = _Spec(check, critical, timeout)

    def remove(self, name: str) -> None:
        """Remove the check called ``name`` (no error when there is none)."""
        self._checks.pop(name, None)

    async def run(self, *, critical_only: bool = False) -> HealthReport:
        """Run the checks (only the critical ones with ``critical_only``) concurrently.

        Never raises for a failing check and never waits longer than the largest timeout
        (plus a few milliseconds) for a hung one.
        """
        specs = {n: s for n, s in self._checks.items() if s.critical or not critical_only}
        tasks = {
            name: asyncio.create_task(self._run_one(name, spec), name=f"wis2l-health-{name}")
            for name, spec in specs.items()
        }
        try:
            if tasks:
                limits = [self._limit(spec) for spec in specs.values()]
                wait = None if None in limits else max(t for t in limits if t is not None)
                await asyncio.wait(tasks.values(), timeout=None if wait is None else wait + _GRACE)
        except BaseException:
            for task in tasks.values():
                task.cancel()
            raise
        results = {name: self._collect(name, specs[name], task) for name, task in tasks.items()}
        self._log_changes(results)
        return HealthReport(
            status=_classify(results.values()),
            checks=results,
            uptime_s=time.monotonic() - self.started_at,
            version=package_version(),
        )

    def _limit(self, spec: _Spec) -> float | None:
        limit = self.timeout if spec.timeout is None else spec.timeout
        return limit if limit > 0 else None

    async def _run_one(self, name: str, spec: _Spec) -> CheckResult:
        limit = self._limit(spec)
        start = time.perf_counter()
        error: str | None = None
        details: Mapping[str, Any] | None = None
        deadline = asyncio.timeout(limit)
        try:
            async with deadline:
                details = await spec.check()
        except TimeoutError as exc:
            error = _timed_out(limit) if deadline.expired() else describe_error(exc, self.secrets)
        except CheckFailed as exc:
            error, details = describe_error(exc, self.secrets), exc.details
        except Exception as exc:
            error = describe_error(exc, self.secrets)
        return CheckResult(
            name=name,
            healthy=error is None,
            critical=spec.critical,
            latency_ms=(time.perf_counter() - start) * 1000,
            error=error,
            details=details,
        )

    def _collect(self, name: str, spec: _Spec, task: asyncio.Task[CheckResult]) -> CheckResult:
        if task.done():
            return task.result()
        # The check ignored its cancellation (or is still cleaning up): report it now and
        # let it finish in the background, holding a reference so it is not collected.
        task.cancel()
        self._stragglers.add(task)
        task.add_done_callback(self._stragglers.discard)
        limit = self._limit(spec)
        return CheckResult(
            name=name,
            healthy=False,
            critical=spec.critical,
            latency_ms=(limit or 0.0) * 1000,
            error=_timed_out(limit),
        )

    def _log_changes(self, results: Mapping[str, CheckResult]) -> None:
        for name, result in results.items():
            if not result.healthy and name not in self._failing:
                self._failing.add(name)
                log.warning(
                    "health check %s failing: %s",
                    name,
                    result.error,
                    extra={"check": name, "critical": result.critical, "error": result.error},
                )
            elif result.healthy and name in self._failing:
                self._failing.discard(name)
                log.info("health check %s passing again", name, extra={"check": name})


def _timed_out(limit: float | None) -> str:
    return f"timed out after {float(limit or 0.0)} s"


def _classify(results: Iterable[CheckResult]) -> HealthStatus:
    status = HealthStatus.OK
    for result in results:
        if not result.healthy:
            if result.critical:
                return HealthStatus.UNHEALTHY
            status = HealthStatus.DEGRADED
    return status
