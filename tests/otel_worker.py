"""A process with an OpenTelemetry SDK that exports its spans over OTLP/HTTP, configured
only by the standard ``OTEL_*`` variables (tests/test_telemetry_e2e.py starts two):

    python tests/otel_worker.py api     # examples/api_app.py under uvicorn, behind
                                        # OpenTelemetry's ASGI middleware
    python tests/otel_worker.py relay ARGS...   # `wis2l relay ARGS...`
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

ROOT = Path(__file__).resolve().parents[1]


def serve_api() -> int:
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    sys.path.insert(0, str(ROOT))
    from examples import api_app

    app = OpenTelemetryMiddleware(api_app.App(limit=1000, per=60))
    server = api_app.Server(api_app.server_config(app, host="127.0.0.1", port=0))
    asyncio.run(server.serve())
    return 0


def main() -> int:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    provider = TracerProvider()  # service.name from OTEL_SERVICE_NAME
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    try:
        if sys.argv[1] == "api":
            return serve_api()
        from wis2l_core.cli import main as wis2l

        return wis2l(["relay", *sys.argv[2:]])
    finally:
        provider.shutdown()  # exports what is left


if __name__ == "__main__":
    raise SystemExit(main())
