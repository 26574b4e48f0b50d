"""Capture the library's spans and metrics in a test: the ``wis2l_telemetry`` fixture.

It needs the OpenTelemetry SDK (``pip install opentelemetry-sdk``), and points the
library (:func:`wis2l_core.telemetry.configure`) at an in-memory span exporter and metric
reader for the test, then back to the global providers::

    async def test_a_query_is_traced(wis, wis2l_telemetry):
        await wis.users.find_by_id(some_id)
        span = wis2l_telemetry.span("users.find_by_id")
        assert span.attributes["db.system.name"] == "postgresql"
        assert wis2l_telemetry.points("db.client.operation.duration")
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from wis2l_core.telemetry import configure

__all__ = ["Captured", "capture"]


class Captured:
    """What the library recorded while a :func:`capture` block was open."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    @property
    def spans(self) -> list[ReadableSpan]:
        """Every finished span, oldest first."""
        return list(self.exporter.get_finished_spans())

    def span(self, name: str) -> ReadableSpan:
        """The one finished span called ``name``.

        Raises:
            AssertionError: there is none, or more than one (the names of all are shown).
        """
        found = [s for s in self.spans if s.name == name]
        names = [s.name for s in self.spans]
        assert len(found) == 1, f"{len(found)} spans named {name!r} in {names}"
        return found[0]

    def named(self, name: str) -> list[ReadableSpan]:
        """The finished spans called ``name``, oldest first."""
        return [s for s in self.spans if s.name == name]

    def points(self, metric: str) -> list[Any]:
        """The data points of ``metric`` collected now (each has ``.attributes``)."""
        data = self.reader.get_metrics_data()
        found: list[Any] = []
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for m in scope.metrics:
                    if m.name == metric:
                        found.extend(m.data.data_points)
        return found

    def clear(self) -> None:
        """Forget the spans finished so far (metrics keep their running totals)."""
        self.exporter.clear()

    def tracer(self) -> trace.Tracer:
        """A tracer of the capture's provider, for a test's own parent spans."""
        return self.tracer_provider.get_tracer("tests")


def capture() -> Iterator[Captured]:
    """Point the library at a fresh :class:`Captured` for the block, then back."""
    captured = Captured()
    configure(tracer_provider=captured.tracer_provider, meter_provider=captured.meter_provider)
    try:
        yield captured
    finally:
        configure()
        captured.tracer_provider.shutdown()
        captured.meter_provider.shutdown()
