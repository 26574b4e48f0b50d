"""Health checks' spans and metrics: ``health``, ``health.check <name>``,
``wis2l.health.check.duration`` and ``wis2l.health.status``.

:meth:`wis2l_core.health.HealthChecker.run` hands itself to :func:`observed_run` when an
SDK records (:func:`observing`), and wraps each check with :func:`observed_check`:

- a ``health`` span around the run (``wis2l.health.status``: ``ok``, ``degraded`` or
  ``unhealthy``), and one ``health.check <name>`` span per check inside it (so a check's
  own queries or Redis commands are its children), failed with ``error.type`` when the
  check fails (``timeout`` when its time ran out);
- ``wis2l.health.check.duration`` (seconds) per check, with ``error.type`` on failure;
- ``wis2l.health.status``, a gauge per check of what it does to the report: ``1`` it
  passed, ``0.5`` it failed and is optional (the report is ``degraded``), ``0`` it
  failed and is critical (``unhealthy``). The report's status is the minimum over the
  checks, so one alert rule (``min(wis2l_health_status) == 0``) covers the service.

This module imports nothing from :mod:`wis2l_core.health` (the checker imports it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import attrs

from wis2l_core.telemetry._core import DURATION_BUCKETS, Instruments, record_error, tracer

if TYPE_CHECKING:
    from opentelemetry.metrics import Histogram, Meter, _Gauge

__all__ = ["observed_check", "observed_run", "observing", "status_value"]

R = TypeVar("R", bound="_Report")


class _Result(Protocol):
    """What is read of a :class:`~wis2l_core.health.CheckResult`."""

    @property
    def name(self) -> str: ...
    @property
    def healthy(self) -> bool: ...
    @property
    def critical(self) -> bool: ...


class _Report(Protocol):
    """What is read of a :class:`~wis2l_core.health.HealthReport`."""

    @property
    def status(self) -> str: ...
    @property
    def checks(self) -> Mapping[str, Any]: ...


@attrs.frozen
class _HealthInstruments:
    duration: Histogram
    status: _Gauge

    @classmethod
    def make(cls, m: Meter) -> _HealthInstruments:
        return cls(
            duration=m.create_histogram(
                "wis2l.health.check.duration",
                unit="s",
                description="Duration of each health check.",
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
            ),
            status=m.create_gauge(
                "wis2l.health.status",
                unit="1",
                description=(
                    "Each health check's effect on the report: 1 passed, 0.5 failed "
                    "(optional: degraded), 0 failed (critical: unhealthy)."
                ),
            ),
        )


_INSTRUMENTS: Instruments[_HealthInstruments] = Instruments(_HealthInstruments.make)


def observing() -> bool:
    """True when a span or a measurement of a health run would be recorded."""
    return tracer() is not None or _INSTRUMENTS.get() is not None


def status_value(*, healthy: bool, critical: bool) -> float:
    """``wis2l.health.status`` of one check: 1, 0.5 (optional, failed) or 0."""
    if healthy:
        return 1.0
    return 0.0 if critical else 0.5


async def observed_run(run: Callable[[], Awaitable[R]], *, critical_only: bool) -> R:
    """``run()`` inside a ``health`` span; then each check's ``wis2l.health.status``."""
    t = tracer()
    if t is None:
        report = await run()
    else:
        with t.start_as_current_span(
            "health", attributes={"wis2l.health.critical_only": critical_only}
        ) as span:
            report = await run()
            span.set_attribute("wis2l.health.status", str(report.status))
    _set_status(report.checks.values())
    return report


def _set_status(results: Iterable[_Result]) -> None:
    if (inst := _INSTRUMENTS.get()) is None:
        return
    for result in results:
        inst.status.set(
            status_value(healthy=result.healthy, critical=result.critical),
            {"wis2l.health.check": result.name, "wis2l.health.check.critical": result.critical},
        )


def observed_check(
    name: str, critical: bool, check: Callable[[], Awaitable[Any]]
) -> Callable[[], Awaitable[Any]]:
    """``check`` inside a ``health.check <name>`` span, timed in
    ``wis2l.health.check.duration``."""

    async def observed() -> Any:
        attributes: dict[str, Any] = {
            "wis2l.health.check": name,
            "wis2l.health.check.critical": critical,
        }
        t = tracer()
        start = time.perf_counter()
        error: str | None = None
        try:
            if t is None:
                return await check()
            with t.start_as_current_span(
                f"health.check {name}",
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                try:
                    return await check()
                except BaseException as exc:
                    error = _error_type(exc)
                    record_error(span, exc)
                    span.set_attribute("error.type", error)
                    raise
        except BaseException as exc:
            error = error or _error_type(exc)
            raise
        finally:
            if (inst := _INSTRUMENTS.get()) is not None:
                if error is not None:
                    attributes["error.type"] = error
                inst.duration.record(time.perf_counter() - start, attributes)

    return observed


def _error_type(exc: BaseException) -> str:
    """A check is cancelled only when its time is up (or the whole run is)."""
    if isinstance(exc, asyncio.CancelledError | TimeoutError):
        return "timeout"
    return type(exc).__qualname__
