"""``health_app(wis)``: a dependency-free ASGI 3 app serving health for load balancers.

Routes (``GET`` or ``HEAD``; any prefix before ``/health`` is accepted, and so is a mount
point's ``root_path``):

- ``/health``: the full :class:`~wis2l_core.health.HealthReport` as JSON, 200 (ok or
  degraded) or 503 (unhealthy);
- ``/health/live``: 200 ``{"status": "alive"}`` as long as the process answers;
- ``/health/ready``: 200 when the critical checks pass and the runtime is not stopping,
  else 503. Only the critical checks run, so a hung optional service cannot fail the
  readiness probe by making it slow;
- ``/metrics`` (only with ``health_app(wis, metrics=...)``): every metric of the library in
  the Prometheus text format (:mod:`wis2l_core.telemetry.prometheus`).

Other paths get 404, other methods 405. The ``lifespan`` scope is completed, so the app can
also be served on its own (``uvicorn module:app``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from wis2l_core.asgi._http import Receive, Scope, Send, send_response
from wis2l_core.health import HealthReport, HealthStatus, describe_error

if TYPE_CHECKING:
    from wis2l_core.telemetry.prometheus import PrometheusMetrics

__all__ = ["HealthApp", "HealthSource", "health_app"]

log = logging.getLogger("wis2l_core.health")


class HealthSource(Protocol):
    """What the app needs from the runtime (``Wis2l`` provides it)."""

    async def health(self, *, critical_only: bool = False) -> HealthReport:
        """Run the health checks (only the critical ones with ``critical_only``)."""
        ...

    @property
    def stopping(self) -> bool:
        """True once ``stop()`` has begun: readiness turns false at once."""
        ...


class HealthApp:
    """The ASGI application returned by :func:`health_app`.

    Args:
        source: the runtime whose health is served.
        metrics: the Prometheus metrics served on ``/metrics`` (``None``: a 404 there).
    """

    def __init__(self, source: HealthSource, metrics: PrometheusMetrics | None = None) -> None:
        self.source = source
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection (``http`` or ``lifespan``)."""
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, send)
        elif kind == "lifespan":
            await _lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1000})

    async def _http(self, scope: Scope, send: Send) -> None:
        route = _route(scope.get("path", "/"), scope.get("root_path", ""))
        head = scope.get("method") == "HEAD"
        if route is None or (route == "metrics" and self.metrics is None):
            await _respond(send, 404, {"error": "not found"}, head=head)
        elif scope.get("method") not in ("GET", "HEAD"):
            await _respond(send, 405, {"error": "method not allowed"}, allow=True)
        elif route == "live":
            await _respond(send, 200, {"status": "alive"}, head=head)
        elif route == "ready":
            await self._ready(send, head=head)
        elif route == "metrics":
            await self._metrics(send, head=head)
        else:
            await self._report(send, head=head)

    async def _report(self, send: Send, *, head: bool) -> None:
        try:
            report = await self.source.health()
        except Exception as exc:
            log.exception("health() failed")
            await _respond(send, 503, _failure(exc), head=head)
            return
        await _respond(send, report.http_status, report.to_dict(), head=head)

    async def _ready(self, send: Send, *, head: bool) -> None:
        if self.source.stopping:
            await _respond(send, 503, {"status": "stopping"}, head=head)
            return
        try:
            report = await self.source.health(critical_only=True)
        except Exception as exc:
            log.exception("health() failed")
            await _respond(send, 503, _failure(exc), head=head)
            return
        ready = report.status is not HealthStatus.UNHEALTHY and not self.source.stopping
        body = {"status": "ready" if ready else "not ready", "checks": report.to_dict()["checks"]}
        await _respond(send, 200 if ready else 503, body, head=head)

    async def _metrics(self, send: Send, *, head: bool) -> None:
        from wis2l_core.telemetry.prometheus import CONTENT_TYPE

        assert self.metrics is not None
        body = self.metrics.exposition().encode()
        await send_response(send, 200, body, CONTENT_TYPE.encode(), [], head=head)


def health_app(wis: HealthSource, *, metrics: bool | PrometheusMetrics = False) -> HealthApp:
    """An ASGI app answering ``/health``, ``/health/live`` and ``/health/ready`` for ``wis``.

    Mount it in any ASGI framework or server, e.g. Starlette's
    ``Mount("/health", app=health_app(wis))`` (see the health guide).

    Args:
        wis: the runtime (a started :class:`~wis2l_core.Wis2l`).
        metrics: also serve ``/metrics`` for Prometheus. ``True`` makes the library record
            into a new :func:`~wis2l_core.telemetry.prometheus.prometheus_metrics` (kept
            as the app's ``metrics``; needs the ``prometheus`` extra); or pass the
            ``PrometheusMetrics`` you made yourself.
    """
    if metrics is True:
        from wis2l_core.telemetry.prometheus import prometheus_metrics

        return HealthApp(wis, prometheus_metrics())
    return HealthApp(wis, metrics or None)


def _route(path: str, root_path: str) -> str | None:
    """Which route ``path`` asks for, after removing the mount point ``root_path``."""
    if root_path and path.startswith(root_path):
        path = path[len(root_path) :]
    parts = [p for p in path.split("/") if p]
    if not parts:  # the mount point itself, e.g. Mount("/health", app)
        return "report" if root_path else None
    if parts[-1] == "health":
        return "report"
    if parts[-1] == "metrics":
        return "metrics"
    if parts[-1] in ("live", "ready") and (len(parts) == 1 or parts[-2] == "health"):
        return parts[-1]
    return None


def _failure(exc: BaseException) -> dict[str, Any]:
    return {"status": HealthStatus.UNHEALTHY.value, "error": describe_error(exc)}


async def _respond(
    send: Send, status: int, body: dict[str, Any], *, head: bool = False, allow: bool = False
) -> None:
    headers = [(b"allow", b"GET, HEAD")] if allow else []
    await send_response(send, status, orjson.dumps(body), b"application/json", headers, head=head)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
