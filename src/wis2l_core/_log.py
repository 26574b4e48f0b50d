"""The library's loggers: log records carry the active span's trace and span ids.

``get_logger("wis2l_core.outbox")`` is ``logging.getLogger`` with one filter added, which
sets ``record.trace_id`` (32 hex digits) and ``record.span_id`` (16) when a span is
active, so a line of the log finds its trace (``%(trace_id)s`` in a format, or the record's
attributes in a JSON formatter). With no span (or without ``opentelemetry-api``) the
attributes are not set: give the formatter defaults, as in
``logging.Formatter("%(trace_id)s %(message)s", defaults={"trace_id": "-"})``.

The filter runs only for records that are emitted (the level check comes first) and costs
one context-variable read when no span is active. A library never installs handlers: the
app's configuration decides where the records go.
"""

from __future__ import annotations

import logging

try:
    from opentelemetry.trace import get_current_span
except ImportError:  # pragma: no cover - the telemetry extra is not installed
    get_current_span = None  # type: ignore[assignment]

__all__ = ["TraceContextFilter", "get_logger"]


class TraceContextFilter(logging.Filter):
    """Adds ``trace_id`` and ``span_id`` (hex) to a record made inside an active span."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Never drops a record: it only adds the ids when there is a span."""
        if get_current_span is not None:
            context = get_current_span().get_span_context()
            if context.is_valid:
                record.trace_id = format(context.trace_id, "032x")
                record.span_id = format(context.span_id, "016x")
        return True


_FILTER = TraceContextFilter()


def get_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)``, its records carrying the trace and span ids.

    Args:
        name: the logger's name, ``wis2l_core.<area>``.
    """
    logger = logging.getLogger(name)
    if not any(isinstance(f, TraceContextFilter) for f in logger.filters):
        logger.addFilter(_FILTER)
    return logger
