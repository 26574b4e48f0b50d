"""Every metric of the library on a Prometheus ``/metrics`` page (the ``prometheus`` extra).

One call sets it up::

    from wis2l_core.telemetry.prometheus import prometheus_metrics

    prom = prometheus_metrics()          # the library now records into it
    app.mount("/metrics", prom.asgi_app)  # or: health_app(wis, metrics=prom)

:func:`prometheus_metrics` makes an OpenTelemetry SDK ``MeterProvider`` whose one reader is
OpenTelemetry's Prometheus reader, registered in a ``CollectorRegistry`` of its own (never
``prometheus_client``'s global one, so two of them, or an app's own registry, never
collide). The provider only records what is given to it, so the call also points the
library at it (:func:`wis2l_core.telemetry.configure`), keeping any tracer provider set
there. With ``set_global=True`` it becomes OpenTelemetry's global meter provider too, and
every instrumented package of the process (ASGI, HTTP clients...) shows on the same page.

Names follow OpenTelemetry's Prometheus compatibility rules: dots become underscores, the
unit is a suffix (``s`` -> ``_seconds``), counters end in ``_total``, and a histogram is
``_bucket``/``_sum``/``_count``: ``db.client.operation.duration`` is scraped as
``db_client_operation_duration_seconds_bucket``. The table is in docs/observability.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import prometheus_client
from opentelemetry import metrics as otel_metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry

from wis2l_core.telemetry import _core

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource

__all__ = ["CONTENT_TYPE", "PrometheusMetrics", "prometheus_metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The ``Content-Type`` of :meth:`PrometheusMetrics.exposition` (the text format 0.0.4,
which every Prometheus version reads)."""


class PrometheusMetrics:
    """A meter provider read by Prometheus: made by :func:`prometheus_metrics`.

    Attributes:
        meter_provider: the SDK ``MeterProvider`` (give it to anything else that should
            show on the page).
        registry: the ``prometheus_client`` registry the reader is registered in.
        asgi_app: an ASGI app answering every ``GET`` with the exposition
            (``prometheus_client.make_asgi_app``; it honours ``Accept-Encoding: gzip``).
    """

    def __init__(
        self, *, resource: Resource | None = None, prefix: str = "", target_info: bool = True
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._reader = PrometheusMetricReader(
            disable_target_info=not target_info, prefix=prefix, registry=self.registry
        )
        kwargs: dict[str, Any] = {"metric_readers": [self._reader]}
        if resource is not None:
            kwargs["resource"] = resource
        self.meter_provider = MeterProvider(**kwargs)
        self.asgi_app = prometheus_client.make_asgi_app(registry=self.registry)
        self._previous: Any = None
        self._configured = False
        self._closed = False

    def exposition(self) -> str:
        """The page Prometheus scrapes, in the text format (collects the metrics now)."""
        return prometheus_client.generate_latest(self.registry).decode()

    def use_for_library(self) -> None:
        """Make the library record into this provider (keeps the tracer provider set)."""
        if not self._configured:
            self._previous = _core._Overrides.meter_provider
            self._configured = True
        _core.configure(
            tracer_provider=_core._Overrides.tracer_provider, meter_provider=self.meter_provider
        )

    def close(self) -> None:
        """Stop: the library goes back to the meter provider it had, the reader leaves its
        registry. Safe to call twice. (A global provider stays set: OpenTelemetry's
        global cannot be replaced.)"""
        if self._closed:
            return
        self._closed = True
        if self._configured and _core._Overrides.meter_provider is self.meter_provider:
            _core.configure(
                tracer_provider=_core._Overrides.tracer_provider, meter_provider=self._previous
            )
        self.meter_provider.shutdown()


def prometheus_metrics(
    *,
    set_global: bool = False,
    resource: Resource | None = None,
    prefix: str = "",
    target_info: bool = True,
) -> PrometheusMetrics:
    """Serve the library's metrics to Prometheus: the provider is made and put to use.

    The library records into the returned object's provider from now on (through
    :func:`wis2l_core.telemetry.configure`, so the tracer provider given there is kept).
    Serve :attr:`PrometheusMetrics.asgi_app`, pass it to ``health_app(wis, metrics=...)``,
    or write :meth:`PrometheusMetrics.exposition` wherever you like. Call
    :meth:`PrometheusMetrics.close` at shutdown.

    Args:
        set_global: also make it OpenTelemetry's global meter provider (every instrumented
            package shows on the page). Only the first global provider of a process takes.
        resource: the SDK ``Resource`` (``service.name``...); the SDK's default reads
            ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``. It is the
            ``target_info`` metric.
        prefix: put in front of every metric name (``myapp`` -> ``myapp_db_client_...``).
        target_info: serve the ``target_info`` metric.

    Returns:
        The :class:`PrometheusMetrics`, already recording.
    """
    prom = PrometheusMetrics(resource=resource, prefix=prefix, target_info=target_info)
    if set_global:
        otel_metrics.set_meter_provider(prom.meter_provider)
    prom.use_for_library()
    return prom
