"""``HealthChecker``: named checks, run all at once, each bounded by its own timeout.

A hung server cannot make :meth:`HealthChecker.run` slower than the timeout: each check is
cancelled when its time is up, and a check that does not let go even then is left to
finish in the background while the report goes out. Error messages are short and scrubbed
of passwords, so a report can be served to a load balancer as is.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from wis2l_core._secrets import secrets_of
from wis2l_core._version import package_version
from wis2l_core.health._checks import (
    Check,
    CheckFailed,
    HasBacklog,
    Pingable,
    database_check,
    describe_error,
    outbox_check,
    ping_check,
)
from wis2l_core.health._report import CheckResult, HealthReport, classify
from wis2l_core.telemetry import _health as telemetry

if TYPE_CHECKING:
    from wis2l_core.config import Settings
    from wis2l_core.db.pool import Database

__all__ = ["HealthChecker"]

log = logging.getLogger("wis2l_core.health")

_GRACE = 0.02
"""Seconds a cancelled check gets to let go before the report goes out without it."""


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
            database: the pool, checked for reachability and an applied schema.
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
        if telemetry.observing():  # an SDK records: spans, durations and status gauges
            return await telemetry.observed_run(
                functools.partial(self._run, critical_only=critical_only),
                critical_only=critical_only,
            )
        return await self._run(critical_only=critical_only)

    async def _run(self, *, critical_only: bool) -> HealthReport:
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
            status=classify(results.values()),
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
        check = spec.check
        if telemetry.observing():
            check = telemetry.observed_check(name, spec.critical, check)
        try:
            async with deadline:
                details = await check()
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
