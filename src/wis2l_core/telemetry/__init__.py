"""OpenTelemetry traces and metrics of the library (the ``telemetry`` extra).

See ``docs/observability.md`` for the spans and metrics and how to export them.
"""

from wis2l_core._log import TraceContextFilter
from wis2l_core.telemetry._core import SCOPE, configure

__all__ = ["SCOPE", "TraceContextFilter", "configure"]
