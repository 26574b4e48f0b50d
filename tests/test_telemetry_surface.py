"""The telemetry surface: Prometheus ``/metrics``, ``health_app(metrics=)``, log correlation,
and export to an OTLP/HTTP endpoint named only by the standard ``OTEL_*`` variables."""

from __future__ import annotations

import gzip
import json
import logging
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
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


ROOT = Path(__file__).resolve().parents[1]
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "le", "inf", "nan",
}  # fmt: skip
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


def metric_table() -> list[dict[str, str]]:
    """The rows of docs/observability.md's metric table, by column name."""
    text = (ROOT / "docs" / "observability.md").read_text(encoding="utf-8")
    section = text.split("\n## All metrics\n", 1)[1]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = [[cell.strip().strip("`") for cell in line.strip("|").split("|")] for line in lines[2:]]
    return [dict(zip(header, row, strict=True)) for row in rows]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (labels, functions and keywords left out)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping labels
    names = set()
    for found in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        followed = expr[found.end() :].lstrip()
        if followed.startswith("(") or found[0].lower() in PROMQL_WORDS:
            continue  # a function or aggregation, or a keyword
        names.add(found[0])
    return names


def test_the_metric_table_lists_every_metric_the_issue_names() -> None:
    listed = {row["metric"] for row in metric_table()}
    assert listed == {
        "db.client.operation.duration",
        "db.client.connection.count",
        "db.client.connection.max",
        "db.client.connection.pending_requests",
        "db.client.connection.wait_time",
        "db.client.connection.timeouts",
        "messaging.client.operation.duration",
        "messaging.client.sent.messages",
        "messaging.client.consumed.messages",
        "messaging.process.duration",
        "wis2l.outbox.backlog",
        "wis2l.outbox.lag",
        "wis2l.outbox.publish_latency",
        "wis2l.outbox.published",
        "wis2l.events.dead_lettered",
        "wis2l.cache.operations",
        "wis2l.ratelimit.decisions",
        "wis2l.auth.verifications",
        "wis2l.health.check.duration",
        "wis2l.health.status",
    }


def test_the_table_gives_the_names_the_prometheus_exporter_makes(prom: PrometheusMetrics) -> None:
    """Each row's instrument and unit, recorded for real, is scraped under its Prometheus
    column's name (so the table cannot drift from the exporter's naming rules)."""
    meter = _core.meter()
    assert meter is not None
    expected = {}
    for row in metric_table():
        name, unit, kind = row["metric"], row["unit"], row["instrument"]
        if kind == "histogram":
            meter.create_histogram(name, unit=unit).record(0.5)
        elif kind == "counter":
            meter.create_counter(name, unit=unit).add(1)
        elif kind == "up-down counter":
            meter.create_up_down_counter(name, unit=unit).add(1)
        else:
            assert kind == "gauge", row
            meter.create_gauge(name, unit=unit).set(1)
        expected[row["Prometheus"]] = kind
    scraped = {
        sample.name for family in text_string_to_metric_families(prom.exposition())
        for sample in family.samples  # type: ignore[attr-defined]
    }  # fmt: skip
    for name, kind in expected.items():
        series = {name + s for s in HISTOGRAM_SERIES} if kind == "histogram" else {name}
        assert series <= scraped, (name, sorted(scraped))


def test_the_dashboard_reads_only_documented_metrics() -> None:
    dashboard = json.loads((ROOT / "docs" / "grafana" / "wis2l-core.json").read_text())
    documented = {row["Prometheus"]: row["instrument"] for row in metric_table()}
    allowed = {"target_info"}
    for name, kind in documented.items():
        allowed |= {name + s for s in HISTOGRAM_SERIES} if kind == "histogram" else {name}
    exprs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                exprs.append(node["expr"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(dashboard["panels"])
    assert len(exprs) >= 20
    variables = [v for v in dashboard["templating"]["list"] if v["type"] == "query"]
    assert {v["name"] for v in variables} == {"job", "instance"}
    used = set()
    for expr in exprs + [v["query"]["query"] for v in variables]:
        names = metric_names(expr)
        if expr.startswith("label_values("):
            names -= {"job", "instance"}  # the label asked for, not a metric
        assert names, expr
        used |= names
        assert names <= allowed, (expr, sorted(names - allowed))
    # the dashboard covers the outbox, the pool, queries, caches, identity and health
    for needed in (
        "wis2l_outbox_backlog",
        "wis2l_outbox_lag_seconds",
        "wis2l_outbox_publish_latency_seconds_bucket",
        "db_client_connection_count",
        "db_client_connection_wait_time_seconds_bucket",
        "db_client_operation_duration_seconds_bucket",
        "wis2l_cache_operations_total",
        "wis2l_ratelimit_decisions_total",
        "wis2l_auth_verifications_total",
        "wis2l_health_status",
    ):
        assert needed in used, needed
    assert any("db_query_summary" in e and "histogram_quantile(0.95" in e for e in exprs)


def test_promql_names_are_found() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le, db_query_summary) "
        '(rate(db_client_operation_duration_seconds_bucket{job=~"$job"}[$__rate_interval])))'
        " / on(instance) group_left max without (x) (wis2l_outbox_backlog)"
    )
    assert metric_names(expr) == {
        "db_client_operation_duration_seconds_bucket",
        "wis2l_outbox_backlog",
    }


def test_the_dashboard_imports_cleanly() -> None:
    """Unique panel ids, no panels on top of each other, every query on the data source
    variable (so importing it asks only for the Prometheus to use)."""
    dashboard = json.loads((ROOT / "docs" / "grafana" / "wis2l-core.json").read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not mine & cells, panel["title"]
        cells |= mine
        for target in panel.get("targets", []):
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert dashboard["uid"] == "wis2l-core"
