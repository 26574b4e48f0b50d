"""The telemetry surface: Prometheus ``/metrics``, ``health_app(metrics=)``, log correlation."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.test_asgi import Runtime, call

from wis2l_core._log import TraceContextFilter, get_logger
from wis2l_core.asgi import health_app
from wis2l_core.health import HealthChecker
from wis2l_core.telemetry import _core
from wis2l_core.telemetry.prometheus import PrometheusMetrics, prometheus_metrics
from wis2l_core.testing.telemetry import Captured


@pytest.fixture
def prom() -> Iterator[PrometheusMetrics]:
    made = prometheus_metrics()
    try:
        yield made
    finally:
        made.close()


def families(text: str) -> dict[str, object]:
    """The metric families of an exposition, by name (as Prometheus' own parser reads it)."""
    return {family.name: family for family in text_string_to_metric_families(text)}


def record_query(seconds: float, summary: str = "users.find_by_id") -> None:
    """One query's duration, through the library's own instrument."""
    duration = _core.DB_DURATION.get()
    assert duration is not None, "prometheus_metrics() did not point the library at itself"
    duration.record(seconds, {"db.system.name": "postgresql", "db.query.summary": summary})


def test_a_library_histogram_is_scraped_with_its_unit_suffix(prom: PrometheusMetrics) -> None:
    record_query(0.003)
    record_query(0.2)
    found = families(prom.exposition())
    family = found["db_client_operation_duration_seconds"]
    assert family.type == "histogram"  # type: ignore[attr-defined]
    samples = {
        (s.name, s.labels.get("le")): s  # type: ignore[attr-defined]
        for s in family.samples  # type: ignore[attr-defined]
    }
    assert samples[("db_client_operation_duration_seconds_count", None)].value == 2
    assert samples[("db_client_operation_duration_seconds_sum", None)].value == pytest.approx(0.203)
    # the semantic conventions' buckets: 3 ms falls in le=0.005, 200 ms in le=0.5
    assert samples[("db_client_operation_duration_seconds_bucket", "0.005")].value == 1
    assert samples[("db_client_operation_duration_seconds_bucket", "0.5")].value == 2
    sample = samples[("db_client_operation_duration_seconds_count", None)]
    assert sample.labels["db_query_summary"] == "users.find_by_id"
    assert sample.labels["otel_scope_name"] == "wis2l_core"


def test_counters_end_in_total_and_gauges_keep_their_unit(prom: PrometheusMetrics) -> None:
    meter = _core.meter()
    assert meter is not None
    meter.create_counter("wis2l.outbox.published", unit="{event}").add(3)
    meter.create_gauge("wis2l.outbox.lag", unit="s").set(1.5, {"wis2l.outbox.partition": "p"})
    found = families(prom.exposition())
    published = found["wis2l_outbox_published"]  # the parser strips _total from the family
    assert published.type == "counter"  # type: ignore[attr-defined]
    assert [s.name for s in published.samples] == ["wis2l_outbox_published_total"]  # type: ignore[attr-defined]
    lag = found["wis2l_outbox_lag_seconds"]
    assert [s.value for s in lag.samples] == [1.5]  # type: ignore[attr-defined]


async def test_the_asgi_app_serves_the_exposition(prom: PrometheusMetrics) -> None:
    record_query(0.01)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/metrics", "query_string": b"",
             "headers": []}  # fmt: skip
    await prom.asgi_app(scope, receive, send)
    assert sent[0]["status"] == 200
    text = b"".join(m.get("body", b"") for m in sent[1:]).decode()
    assert "db_client_operation_duration_seconds" in families(text)


def test_close_gives_the_library_back_its_providers() -> None:
    captured = Captured()
    _core.configure(tracer_provider=captured.tracer_provider)
    try:
        prom = prometheus_metrics()
        assert _core._Overrides.meter_provider is prom.meter_provider
        assert _core._Overrides.tracer_provider is captured.tracer_provider  # kept
        prom.close()
        prom.close()  # twice is safe
        assert _core._Overrides.meter_provider is None
        assert _core._Overrides.tracer_provider is captured.tracer_provider
        assert "db_client" not in prom.exposition()  # the reader left its registry
    finally:
        _core.configure()
        captured.tracer_provider.shutdown()
        captured.meter_provider.shutdown()


async def test_health_app_serves_metrics_when_asked() -> None:
    app = health_app(Runtime(HealthChecker()), metrics=True)
    assert app.metrics is not None
    try:
        record_query(0.02, "builds.claim")
        for root_path, path in (("", "/metrics"), ("/health", "/health/metrics")):
            response = await call(app, path, root_path=root_path)
            assert response.status == 200
            assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
            family = families(response.body.decode())["db_client_operation_duration_seconds"]
            summaries = {s.labels["db_query_summary"] for s in family.samples}  # type: ignore[attr-defined]
            assert summaries == {"builds.claim"}
        head = await call(app, "/metrics", method="HEAD")
        assert (head.status, head.body) == (200, b"")
        assert (await call(app, "/health/live")).status == 200  # the probes still answer
    finally:
        app.metrics.close()


async def test_health_app_serves_given_metrics_and_404s_without(prom: PrometheusMetrics) -> None:
    record_query(0.02)
    app = health_app(Runtime(HealthChecker()), metrics=prom)
    assert app.metrics is prom
    assert (await call(app, "/metrics")).status == 200
    response = await call(health_app(Runtime(HealthChecker())), "/metrics")
    assert (response.status, response.json()) == (404, {"error": "not found"})


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger("wis2l_core.test_log")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


def test_log_records_carry_the_active_span_ids(records: Records) -> None:
    log = get_logger("wis2l_core.test_log")
    assert log is logging.getLogger("wis2l_core.test_log")  # a plain Logger
    assert get_logger("wis2l_core.test_log").filters.count(log.filters[0]) == 1  # added once
    captured = Captured()
    try:
        with captured.tracer().start_as_current_span("request") as span:
            log.info("inside", extra={"user_id": 7})
        log.info("outside")
    finally:
        captured.tracer_provider.shutdown()
        captured.meter_provider.shutdown()
    inside, outside = records.records
    context = span.get_span_context()
    assert inside.trace_id == f"{context.trace_id:032x}"  # type: ignore[attr-defined]
    assert inside.span_id == f"{context.span_id:016x}"  # type: ignore[attr-defined]
    assert inside.user_id == 7  # type: ignore[attr-defined]  # the caller's extra= is kept
    assert not hasattr(outside, "trace_id")
    assert not hasattr(outside, "span_id")
    formatter = logging.Formatter("%(trace_id)s %(message)s", defaults={"trace_id": "-"})
    assert formatter.format(outside) == "- outside"
    assert formatter.format(inside) == f"{context.trace_id:032x} inside"


def test_the_filter_never_drops_a_record() -> None:
    record = logging.LogRecord("wis2l_core.x", logging.INFO, __file__, 1, "m", None, None)
    assert TraceContextFilter().filter(record) is True
