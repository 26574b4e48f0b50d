"""The connection pool's telemetry: waiting for a connection, and the pool's gauges.

:func:`waiting` wraps a borrow that waits on psycopg_pool (no idle connection at hand) in
a ``db.client.connection.wait`` span and a ``db.client.connection.wait_time`` value;
:func:`watch` reports an open pool in the ``db.client.connection.*`` gauges, read from
psycopg_pool's ``get_stats()`` when the metrics are collected (nothing per borrow).
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import attrs
import psycopg
from psycopg import conninfo as pg_conninfo

from wis2l_core.telemetry._core import Instruments, record_error, tracer

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Histogram, Meter, Observation
    from opentelemetry.trace import Tracer
    from psycopg_pool import AsyncConnectionPool

__all__ = ["POOL_INSTRUMENTS", "POSTGRESQL", "pool_name", "waiting", "watch"]

POSTGRESQL = "postgresql"
"""``db.system.name`` of every span and measurement of PostgreSQL."""

_NULL: contextlib.nullcontext[None] = contextlib.nullcontext()


@attrs.frozen
class _PoolInstruments:
    wait_time: Histogram
    observables: tuple[object, ...]


_POOLS: weakref.WeakKeyDictionary[AsyncConnectionPool[Any], str] = weakref.WeakKeyDictionary()


def pool_name(pool: AsyncConnectionPool[Any]) -> str:
    """``db.client.connection.pool.name``: ``<host>:<port>/<database>`` of the pool's URL."""
    name = _POOLS.get(pool)
    if name is not None:
        return name
    try:
        info = pg_conninfo.conninfo_to_dict(pool.conninfo if isinstance(pool.conninfo, str) else "")
    except psycopg.ProgrammingError:
        return pool.name
    host = info.get("host") or "localhost"
    return f"{host}:{info.get('port') or 5432}/{info.get('dbname') or ''}"


def _stats() -> Iterable[tuple[AsyncConnectionPool[Any], str, dict[str, int]]]:
    for pool, name in list(_POOLS.items()):
        if not pool.closed:
            yield pool, name, pool.get_stats()


def _count(options: CallbackOptions) -> Iterable[Observation]:
    from opentelemetry.metrics import Observation

    for _pool, name, stats in _stats():
        idle = stats.get("pool_available", 0)
        used = max(stats.get("pool_size", 0) - idle, 0)
        yield Observation(idle, _pool_attributes(name, "idle"))
        yield Observation(used, _pool_attributes(name, "used"))


def _gauge(key: str) -> Any:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        for _pool, name, stats in _stats():
            yield Observation(stats.get(key, 0), _pool_attributes(name))

    return observe


def _pool_attributes(name: str, state: str | None = None) -> dict[str, str]:
    found = {"db.system.name": POSTGRESQL, "db.client.connection.pool.name": name}
    if state is not None:
        found["db.client.connection.state"] = state
    return found


def _pool_instruments(m: Meter) -> _PoolInstruments:
    return _PoolInstruments(
        wait_time=m.create_histogram(
            "db.client.connection.wait_time",
            unit="s",
            description="The time it took to obtain a connection from the pool.",
            explicit_bucket_boundaries_advisory=(0.0, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0),
        ),
        observables=(
            m.create_observable_up_down_counter(
                "db.client.connection.count",
                [_count],
                unit="{connection}",
                description="The number of connections in the pool, by state (idle, used).",
            ),
            m.create_observable_up_down_counter(
                "db.client.connection.max",
                [_gauge("pool_max")],
                unit="{connection}",
                description="The maximum number of open connections allowed.",
            ),
            m.create_observable_up_down_counter(
                "db.client.connection.pending_requests",
                [_gauge("requests_waiting")],
                unit="{request}",
                description="The number of borrows waiting for a connection.",
            ),
            m.create_observable_counter(
                "db.client.connection.timeouts",
                [_gauge("requests_errors")],
                unit="{timeout}",
                description="Borrows that timed out waiting for a connection.",
            ),
        ),
    )


POOL_INSTRUMENTS: Instruments[_PoolInstruments] = Instruments(_pool_instruments)
"""The pool's instruments (the gauges are registered once a meter is set)."""


def watch(pool: AsyncConnectionPool[Any]) -> None:
    """Report ``pool`` in the ``db.client.connection.*`` metrics while it is open.

    Its ``db.client.connection.pool.name`` is ``<host>:<port>/<database>``, with ``#2``,
    ``#3`` ... after it for a second or third open pool of the same database.
    """
    base = name = pool_name(pool)
    taken = {v for p, v in list(_POOLS.items()) if not p.closed}
    count = 1
    while name in taken:
        count += 1
        name = f"{base}#{count}"
    _POOLS[pool] = name
    POOL_INSTRUMENTS.get()


def waiting(pool: AsyncConnectionPool[Any]) -> contextlib.AbstractContextManager[object]:
    """Around a borrow that waits on psycopg_pool (no idle connection at hand): a
    ``db.client.connection.wait`` span and a ``db.client.connection.wait_time`` value.

    Nothing at all when no SDK records.
    """
    spans = tracer()
    instruments = POOL_INSTRUMENTS.get()
    if spans is None and instruments is None:
        return _NULL
    return _waiting(spans, instruments, pool)


@contextlib.contextmanager
def _waiting(
    spans: Tracer | None, instruments: _PoolInstruments | None, pool: AsyncConnectionPool[Any]
) -> Iterator[None]:
    attributes = _pool_attributes(_POOLS.get(pool) or pool_name(pool))
    span = None
    if spans is not None:
        from opentelemetry.trace import SpanKind

        span = spans.start_span(
            "db.client.connection.wait", kind=SpanKind.INTERNAL, attributes=attributes
        )
    start = time.perf_counter()
    try:
        yield
    except BaseException as exc:
        if span is not None:
            record_error(span, exc)
        raise
    finally:
        if instruments is not None:
            instruments.wait_time.record(time.perf_counter() - start, attributes)
        if span is not None:
            span.end()
