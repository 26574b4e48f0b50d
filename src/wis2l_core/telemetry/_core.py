"""The library's one door to OpenTelemetry: a tracer and a meter, or ``None``.

wis2l-core records through the OpenTelemetry API only (instrumentation scope
``wis2l_core``); the app chooses the SDK and the exporters. Every boundary asks
:func:`tracer` / :func:`meter` (or an :class:`Instruments` set) before it records, and does
nothing more when the answer is ``None``: that is the case when ``opentelemetry-api`` is
not installed (the ``telemetry`` extra), or when no SDK provider is set, globally or
through :func:`configure`. The check is two attribute reads and an identity comparison,
so an app without an SDK pays nothing measurable.

The providers are looked up on each call, not once at import, so an app may set up its
SDK after importing (or even after starting) the library. (A provider named only by
``OTEL_PYTHON_TRACER_PROVIDER`` counts once the API has loaded it, which the first
``trace.get_tracer_provider()`` of the app or its launcher does.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from opentelemetry.metrics import Histogram, Meter, MeterProvider
    from opentelemetry.trace import Span, Tracer, TracerProvider

try:
    from opentelemetry import metrics as _metrics
    from opentelemetry import trace as _trace

    _API = True
except ImportError:  # pragma: no cover - the telemetry extra is not installed
    _metrics = None  # type: ignore[assignment]
    _trace = None  # type: ignore[assignment]
    _API = False

from wis2l_core._version import package_version

__all__ = [
    "DB_DURATION",
    "DURATION_BUCKETS",
    "SCHEMA_URL",
    "SCOPE",
    "Instruments",
    "configure",
    "meter",
    "record_error",
    "tracer",
]

SCOPE = "wis2l_core"
"""The instrumentation scope of every span and metric the library records."""

SCHEMA_URL = "https://opentelemetry.io/schemas/1.37.0"
"""The semantic conventions the names follow."""

T = TypeVar("T")


class _Overrides:
    """Providers given to :func:`configure` (``None``: the global ones)."""

    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None


def configure(
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> None:
    """Record with these providers instead of OpenTelemetry's global ones.

    Most apps never call this: they set the global providers
    (``trace.set_tracer_provider``, ``metrics.set_meter_provider``, or the
    ``opentelemetry-instrument`` launcher) and the library uses them. It is for tests and
    for an app that keeps the library's telemetry apart. ``configure()`` with no argument
    goes back to the global providers.
    """
    _Overrides.tracer_provider = tracer_provider
    _Overrides.meter_provider = meter_provider


def _proxy_or_noop(provider: object) -> bool:
    """True for the API's placeholder providers (no SDK is set)."""
    return type(provider).__name__ in {
        "ProxyTracerProvider",
        "NoOpTracerProvider",
        "_ProxyMeterProvider",
        "NoOpMeterProvider",
    }


class _Cache:
    tracer_provider: object = None
    tracer: Tracer | None = None
    meter_provider: object = None
    meter: Meter | None = None


def tracer() -> Tracer | None:
    """The library's tracer, or ``None`` when nothing would record a span."""
    if not _API:
        return None
    provider: Any = _Overrides.tracer_provider or _trace._TRACER_PROVIDER
    if provider is not _Cache.tracer_provider:
        _Cache.tracer_provider = provider
        _Cache.tracer = (
            None
            if provider is None or _proxy_or_noop(provider)
            else provider.get_tracer(SCOPE, package_version(), schema_url=SCHEMA_URL)
        )
    return _Cache.tracer


def meter() -> Meter | None:
    """The library's meter, or ``None`` when nothing would record a measurement."""
    if not _API:
        return None
    internal: Any = _metrics._internal
    provider: Any = _Overrides.meter_provider or internal._METER_PROVIDER
    if provider is not _Cache.meter_provider:
        _Cache.meter_provider = provider
        _Cache.meter = (
            None
            if provider is None or _proxy_or_noop(provider)
            else provider.get_meter(SCOPE, package_version(), schema_url=SCHEMA_URL)
        )
    return _Cache.meter


class Instruments(Generic[T]):
    """A set of metric instruments, made once per meter and only when one records.

    ``make`` builds the set from a meter (an attrs class of counters and histograms, say);
    :meth:`get` returns it, or ``None`` when no SDK is set::

        _DB = Instruments(DbInstruments.make)
        if (inst := _DB.get()) is not None:
            inst.duration.record(seconds, attributes)
    """

    def __init__(self, make: Callable[[Meter], T]) -> None:
        self._make = make
        self._meter: Meter | None = None
        self._made: T | None = None

    def get(self) -> T | None:
        """The instruments for the current meter, or ``None`` when nothing records."""
        current = meter()
        if current is None:
            return None
        if current is not self._meter:
            self._made, self._meter = self._make(current), current
        return self._made


def record_error(span: Span, exc: BaseException) -> None:
    """Mark ``span`` failed with ``exc``: ``error.type`` and an ERROR status.

    ``error.type`` is the exception's class name (ours, ``NotFound``, ``Conflict``...);
    the message goes in the status description, never a parameter value (the library's
    errors do not carry them).
    """
    assert _trace is not None  # a span exists only when the API does
    span.set_attribute("error.type", type(exc).__qualname__)
    span.set_status(_trace.Status(_trace.StatusCode.ERROR, str(exc)[:200]))


DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
"""The semantic conventions' buckets for ``*.operation.duration`` histograms (seconds)."""


def _db_duration(m: Meter) -> Histogram:
    return m.create_histogram(
        "db.client.operation.duration",
        unit="s",
        description="Duration of database client operations.",
        explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
    )


DB_DURATION: Instruments[Histogram] = Instruments(_db_duration)
"""``db.client.operation.duration``, shared by PostgreSQL and Redis (``db.system.name``
tells them apart): one instrument, made once per meter."""
