"""examples/trace_tree.py: a request's trace printed as a tree, with no backend.

The tree is drawn from parents and links, so it shows whatever the library traces; the
run below checks the request span and the shape of the output, and the drawing is checked
on spans of known shape (a parent, a child, a linked span in another trace, a stranger).
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from types import ModuleType

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind
from tests.test_examples import run_example

from wis2l_core.testing.servers import Servers

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(EXAMPLES))  # it imports examples/_common.py
    spec = importlib.util.spec_from_file_location("trace_tree_example", EXAMPLES / "trace_tree.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_tree_follows_parents_and_links(example: ModuleType) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("POST /x", kind=SpanKind.SERVER) as request:
        with tracer.start_as_current_span("builds.update", kind=SpanKind.CLIENT) as write:
            write.set_attribute("db.query.summary", "builds.update")
        with tracer.start_as_current_span("second"):
            pass
    # the relay: a trace of its own, linked to the write
    with (
        tracer.start_as_current_span(
            "send wis2l.build.started",
            context=trace.set_span_in_context(trace.INVALID_SPAN),
            kind=SpanKind.PRODUCER,
            links=[Link(write.get_span_context())],
        ),
        tracer.start_as_current_span("publish"),
    ):
        pass
    with tracer.start_as_current_span(
        "unrelated", context=trace.set_span_in_context(trace.INVALID_SPAN)
    ):
        pass
    spans = list(exporter.get_finished_spans())
    root = next(s for s in spans if s.context == request.get_span_context())
    whole = example.one_trace(spans, root)
    assert [s.name for s in whole] == [
        "POST /x",
        "builds.update",
        "second",
        "send wis2l.build.started",
        "publish",
    ]
    lines = [re.sub(r"\d+\.\d ms", "N ms", line) for line in example.tree_lines(whole)]
    assert lines == [
        "POST /x  SERVER  N ms",
        "├─ builds.update  CLIENT  N ms  db.query.summary=builds.update",
        "│  └─ ~> send wis2l.build.started  PRODUCER  N ms",
        "│     └─ publish  INTERNAL  N ms",
        "└─ second  INTERNAL  N ms",
    ]
    provider.shutdown()


@pytest.mark.slow
def test_trace_tree_prints_the_request_trace(
    wis2l_servers: Servers, wis2l_database_url: str
) -> None:
    out = run_example(
        "trace_tree.py", wis2l_servers, wis2l_database_url, "tt" + os.urandom(4).hex()
    )
    lines = out.splitlines()
    header = re.fullmatch(r"trace ([0-9a-f]{32}): (\d+) spans", lines[0])
    assert header is not None, out
    tree = lines[1:-1]
    assert int(header[2]) == len(tree)
    assert tree[0].startswith("POST /builds/{build_id}/start  SERVER  ")
    assert tree[0].endswith("http.route=/builds/{build_id}/start")
    # every other span hangs below the request (one tree), drawn with branches
    assert all(re.match(r"[│ ]*[├└]─ ", line) for line in tree[1:]), out
    assert lines[-1] == "the subscriber saw progress 10%"
