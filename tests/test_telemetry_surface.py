"""The telemetry surface: Prometheus ``/metrics``, ``health_app(metrics=)``, log correlation,
and export to an OTLP/HTTP endpoint named only by the standard ``OTEL_*`` variables."""

from __future__ import annotations

import gzip
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
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


class Receiver(ThreadingHTTPServer):
    """A tiny OTLP/HTTP collector on loopback: it decodes each protobuf request it gets."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        super().__init__(("127.0.0.1", 0), ReceiverHandler)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class ReceiverHandler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        kinds: dict[str, type[Any]] = {
            "/v1/traces": ExportTraceServiceRequest,
            "/v1/metrics": ExportMetricsServiceRequest,
        }
        message = kinds[self.path]()
        message.ParseFromString(body)
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.requests.append((self.path, headers, message))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_spans_and_metrics_reach_an_otlp_http_endpoint(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The standard variables, as the docs tell an app to set them: no code names the URL.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=games")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "wis2l-otlp-test")
    resource = Resource.create()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(), export_interval_millis=60_000)
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    _core.configure(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        tracer = _core.tracer()
        assert tracer is not None
        with tracer.start_as_current_span("users.find_by_id") as parent:
            parent.set_attribute("db.system.name", "postgresql")
            with tracer.start_as_current_span("child"):
                pass
        record_query(0.004)
        assert tracer_provider.force_flush(10_000)
        assert meter_provider.force_flush(10_000)
    finally:
        _core.configure()
        tracer_provider.shutdown()
        meter_provider.shutdown()

    traces = [m for path, _, m in receiver.requests if path == "/v1/traces"]
    spans = {
        span.name: (span, resource_spans.resource, scope_spans.scope)
        for request in traces
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    }
    assert set(spans) == {"users.find_by_id", "child"}
    parent_span, resource_pb, scope = spans["users.find_by_id"]
    assert scope.name == "wis2l_core"
    assert scope.version  # the installed wis2l-core
    attrs = {a.key: a.value.string_value for a in parent_span.attributes}
    assert attrs["db.system.name"] == "postgresql"
    assert spans["child"][0].parent_span_id == parent_span.span_id
    assert spans["child"][0].trace_id == parent_span.trace_id
    service = {a.key: a.value.string_value for a in resource_pb.attributes}["service.name"]
    assert service == "wis2l-otlp-test"
    headers = next(h for path, h, _ in receiver.requests if path == "/v1/traces")
    assert headers["x-tenant"] == "games"
    assert headers["content-type"] == "application/x-protobuf"
    assert headers["content-encoding"] == "gzip"

    metrics = [m for path, _, m in receiver.requests if path == "/v1/metrics"]
    points = [
        point
        for request in metrics
        for resource_metrics in request.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        if scope_metrics.scope.name == "wis2l_core"
        for metric in scope_metrics.metrics
        if metric.name == "db.client.operation.duration" and metric.unit == "s"
        for point in metric.histogram.data_points
    ]
    assert points, metrics
    assert points[0].count == 1
    assert points[0].sum == pytest.approx(0.004)
    assert list(points[0].explicit_bounds) == list(_core.DURATION_BUCKETS)
