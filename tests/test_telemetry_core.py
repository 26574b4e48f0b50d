"""The telemetry core: no SDK means no tracer and no meter; configure points at providers."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import StatusCode

from wis2l_core import telemetry
from wis2l_core.errors import NotFound
from wis2l_core.telemetry import _core
from wis2l_core.testing.telemetry import Captured


def test_without_an_sdk_there_is_no_tracer_and_no_meter() -> None:
    telemetry.configure()
    assert _core.tracer() is None
    assert _core.meter() is None
    made: list[object] = []
    instruments = _core.Instruments(lambda m: made.append(m) or "set")
    assert instruments.get() is None
    assert made == [], "no instrument is made while nothing records"


def test_configure_points_the_library_at_the_given_providers_and_back() -> None:
    tracer_provider = TracerProvider()
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    telemetry.configure(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        tracer = _core.tracer()
        assert tracer is not None
        assert _core.tracer() is tracer, "the tracer is made once per provider"
        with tracer.start_as_current_span("x") as span:
            assert span.is_recording()
            assert span.instrumentation_scope.name == telemetry.SCOPE  # type: ignore[attr-defined]
        made: list[object] = []

        def make(m: Any) -> object:
            made.append(m)
            return object()

        instruments = _core.Instruments(make)
        first = instruments.get()
        assert first is not None
        assert instruments.get() is first
        assert len(made) == 1
        duration = _core.DB_DURATION.get()
        assert duration is not None
        duration.record(0.002, {"db.system.name": "postgresql"})
        data = reader.get_metrics_data()
        assert data is not None
        (metric,) = [
            m
            for r in data.resource_metrics
            for s in r.scope_metrics
            for m in s.metrics
            if m.name == "db.client.operation.duration"
        ]
        assert metric.unit == "s"
        (point,) = metric.data.data_points  # type: ignore[union-attr]
        assert tuple(point.explicit_bounds) == _core.DURATION_BUCKETS  # type: ignore[union-attr]
    finally:
        telemetry.configure()
        tracer_provider.shutdown()
        meter_provider.shutdown()
    assert _core.tracer() is None
    assert _core.meter() is None


def test_record_error_names_the_class_and_never_more_than_200_characters() -> None:
    captured = Captured()
    tracer = captured.tracer()
    with tracer.start_as_current_span("failing") as span:
        _core.record_error(span, NotFound("x" * 500))
    (done,) = captured.spans
    assert done.attributes is not None
    assert done.attributes["error.type"] == "NotFound"
    assert done.status.status_code is StatusCode.ERROR
    assert done.status.description is not None
    assert len(done.status.description) <= 200
    captured.tracer_provider.shutdown()
    captured.meter_provider.shutdown()


def test_the_fixture_captures_a_span_of_the_library(wis2l_telemetry: Captured) -> None:
    tracer = _core.tracer()
    assert tracer is not None
    with tracer.start_as_current_span("one"):
        pass
    assert wis2l_telemetry.span("one").name == "one"
    assert wis2l_telemetry.named("two") == []
    with pytest.raises(AssertionError, match="0 spans named 'two'"):
        wis2l_telemetry.span("two")
    wis2l_telemetry.clear()
    assert wis2l_telemetry.spans == []
