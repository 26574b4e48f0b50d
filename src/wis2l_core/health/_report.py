"""What a health run produces: :class:`HealthReport`, one :class:`CheckResult` per check.

``status`` is ``ok`` (every check passed), ``degraded`` (an optional check failed; HTTP
200) or ``unhealthy`` (a critical check failed; HTTP 503). I/O-free.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import attrs

__all__ = ["CheckResult", "HealthReport", "HealthStatus", "classify"]


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


def classify(results: Iterable[CheckResult]) -> HealthStatus:
    """The verdict for ``results``: ``unhealthy`` if a critical one failed, ``degraded``
    if only optional ones failed, else ``ok``."""
    status = HealthStatus.OK
    for result in results:
        if not result.healthy:
            if result.critical:
                return HealthStatus.UNHEALTHY
            status = HealthStatus.DEGRADED
    return status
