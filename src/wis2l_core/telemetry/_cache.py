"""Redis spans and the caches' metrics, recorded at the one Redis boundary.

Every cache sends its commands through :meth:`wis2l_core.cache.RedisClient.call`; when an
SDK records (:func:`observing`), that guard hands the call to :func:`observed_call`,
which wraps the command in a probe and runs the same guard with it:

- a ``CLIENT`` span named after the command (``GET``, ``SET``, ``EVALSHA
  tokens.acquire`` for a Lua script), with ``db.system.name`` = ``redis``,
  ``db.operation.name``, ``db.query.summary``, ``db.namespace`` (the database index),
  ``server.address``/``server.port``, ``wis2l.cache.name``, and ``wis2l.cache.hit`` on a
  lookup;
- fail-open (the command failed, or the breaker skipped Redis, and the caller got its
  default) is the span event ``wis2l.cache.fail_open`` with ``error.type``;
- ``db.client.operation.duration`` (shared with PostgreSQL) for each command sent, and
  ``wis2l.cache.operations`` by cache and outcome (``hit``, ``miss``, ``read``,
  ``write``, ``fail_open``, ``error``).

The rate limiter's decisions are counted by :func:`record_decision`
(``wis2l.ratelimit.decisions``). With no SDK none of this runs: the guard asks
:func:`observing` (two provider look-ups) and takes its plain path.

This module imports nothing from :mod:`wis2l_core.cache` (the client imports it); it
reads the client and the scripts through the small protocols below.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import attrs
from redis.exceptions import ResponseError

from wis2l_core.errors import ServiceUnavailable
from wis2l_core.telemetry._core import DB_DURATION, Instruments, meter, record_error, tracer

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter, Meter
    from opentelemetry.trace import Span

__all__ = [
    "CACHE_NAMES",
    "OUTCOMES",
    "Probe",
    "observed_call",
    "observing",
    "record_decision",
]

CACHE_NAMES: Mapping[str, str] = {
    "session": "sessions",
    "build": "builds",
    "tokens": "tokens",
    "ratelimit": "ratelimit",
}
"""``wis2l.cache.name`` by the key's service; any other service is a generic ``Cache``
(``store``), and a key outside the namespace is ``other``."""

OUTCOMES = ("hit", "miss", "read", "write", "fail_open", "error")
"""The values of ``wis2l.cache.outcome``."""

_COMMANDS = {"delete": "DEL"}
"""redis-py method names that are not the command's name in upper case."""


def _not_none(reply: Any) -> bool:
    return reply is not None


def _first_not_none(reply: Any) -> bool:
    return bool(reply) and reply[0] is not None


_LOOKUPS: Mapping[str, Callable[[Any], bool]] = {
    "GET": _not_none,
    "GETEX": _not_none,
    "HGET": _not_none,
    "HMGET": _first_not_none,
    "MGET": _first_not_none,
    "HGETALL": bool,
    "EXISTS": bool,
}
"""Commands that look a cached value up: a hit or a miss, told by the reply."""

_READS = frozenset(
    {"ZRANGEBYSCORE", "ZRANGE", "ZCARD", "TTL", "PTTL", "SCAN", "KEYS", "TYPE", "STRLEN"}
)
"""Other commands that only read (outcome ``read``); anything else is a ``write``."""


class _Script(Protocol):
    """What is read of a :class:`~wis2l_core.cache.client.LuaScript`."""

    @property
    def name(self) -> str: ...
    @property
    def hit(self) -> Callable[[Any], bool] | None: ...


class _Client(Protocol):
    """What is read of a :class:`~wis2l_core.cache.client.RedisClient`."""

    @property
    def namespace(self) -> str: ...
    @property
    def degraded(self) -> bool: ...
    @property
    def mode(self) -> str: ...
    @property
    def settings(self) -> Any: ...


@attrs.frozen
class _CacheInstruments:
    operations: Counter
    decisions: Counter

    @classmethod
    def make(cls, m: Meter) -> _CacheInstruments:
        return cls(
            operations=m.create_counter(
                "wis2l.cache.operations",
                unit="{operation}",
                description="Redis commands of the caches, by cache and outcome.",
            ),
            decisions=m.create_counter(
                "wis2l.ratelimit.decisions",
                unit="{decision}",
                description="Rate limiter decisions, by policy and decision.",
            ),
        )


_INSTRUMENTS: Instruments[_CacheInstruments] = Instruments(_CacheInstruments.make)


def observing() -> bool:
    """True when a span or a measurement of a Redis call would be recorded."""
    return tracer() is not None or meter() is not None


@functools.lru_cache(maxsize=32)
def _server(url: str, mode: str) -> tuple[tuple[str, Any], ...]:
    """``db.namespace`` and ``server.*`` of a ``REDIS_URL`` (never its credentials)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    found: dict[str, Any] = {"db.system.name": "redis"}
    if scheme == "unix":
        found["server.address"] = unquote(parts.path)
        db = parse_qs(parts.query).get("db", ["0"])[0]
    else:
        path = [p for p in parts.path.split("/") if p]
        if mode == "sentinel":  # the first segment is the master's name
            db = path[1] if len(path) > 1 else "0"
        else:
            db = path[0] if path else parse_qs(parts.query).get("db", ["0"])[0]
        if mode != "sentinel":  # Sentinel: the master's address is asked at call time
            first = parts.netloc.rpartition("@")[2].split(",")[0]
            host, colon, port = first.rpartition(":")
            if not colon or not port.isdigit():
                host, port = first, "6379"
            found["server.address"] = host.strip("[]")
            found["server.port"] = int(port)
    found["db.namespace"] = db if db.isdigit() else "0"
    return tuple(found.items())


def _base(client: _Client) -> dict[str, Any]:
    found = dict(_server(client.settings.redis_url, client.mode))
    if client.mode == "sentinel":
        redis = getattr(client, "_redis", None)
        pool = getattr(redis, "connection_pool", None)
        address = getattr(pool, "master_address", None)
        if address:
            found["server.address"], found["server.port"] = str(address[0]), int(address[1])
    return found


def _describe(command: Any) -> tuple[str, str, Callable[[Any], bool] | None]:
    """The command's name, the span's name and how to tell a hit from its reply."""
    method = getattr(command, "__name__", None)
    if isinstance(method, str):
        operation = _COMMANDS.get(method, method.upper() if method.isidentifier() else "CALL")
        return operation, operation, _LOOKUPS.get(operation)
    if hasattr(command, "sha") and isinstance(getattr(command, "name", None), str):
        script: _Script = command
        return "EVALSHA", f"EVALSHA {script.name}", script.hit
    return "CALL", "CALL", None


def _cache_of(namespace: str, args: tuple[Any, ...]) -> tuple[str, str | None]:
    """``wis2l.cache.name`` and the key's service, from the command's first key."""
    key = args[0] if args else None
    if isinstance(key, list | tuple):
        key = key[0] if key else None
    if isinstance(key, bytes):
        key = key.decode(errors="replace")
    prefix = namespace + ":"
    if not isinstance(key, str) or not key.startswith(prefix):
        return "other", None
    end = key.find(":", len(prefix))
    service = key[len(prefix) : end] if end >= 0 else key[len(prefix) :]
    return CACHE_NAMES.get(service, "store"), service


class Probe:
    """The command, run by the guard: records whether it ran, how long, what it raised.

    The guard sees a probe and does not observe it again.
    """

    __slots__ = ("command", "error", "ran", "seconds")

    def __init__(self, command: Callable[..., Awaitable[Any]]) -> None:
        self.command = command
        self.ran = False
        self.error: BaseException | None = None
        self.seconds = 0.0

    async def __call__(self, redis: Any, *args: Any, **kwargs: Any) -> Any:
        self.ran = True
        start = time.perf_counter()
        try:
            return await self.command(redis, *args, **kwargs)
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self.seconds = time.perf_counter() - start


def _status_code(exc: BaseException) -> str | None:
    """Redis' error prefix (``WRONGTYPE``, ``OOM``...) of an error reply."""
    if not isinstance(exc, ResponseError):
        return None
    word = str(exc).split(" ", 1)[0]
    return word if word.isupper() and word.isalpha() else None


@attrs.define
class _Call:
    """One observed Redis call: what it is, and what its probe saw."""

    client: _Client
    operation: str
    lookup: Callable[[Any], bool] | None
    cache: str
    service: str | None
    base: dict[str, Any]
    probe: Probe

    def failed(self, span: Span | None, exc: BaseException) -> None:
        """The guard raised: ``ServiceUnavailable`` of a strict call, or a cancellation."""
        strict = isinstance(exc, ServiceUnavailable)
        if span is not None:
            if self.probe.error is not None:
                record_error(span, self.probe.error)
            elif strict:
                _mark_failed(span, _skipped(self.client))
            else:  # cancelled
                record_error(span, exc)
        self.measure("error" if strict else None)

    def finished(self, span: Span | None, result: Any) -> None:
        """The guard returned: the command's reply, or the default (fail-open)."""
        probe = self.probe
        if probe.error is not None or not probe.ran:
            reason = type(probe.error).__qualname__ if probe.error else _skipped(self.client)
            if span is not None:
                if probe.error is not None:
                    record_error(span, probe.error)
                else:
                    _mark_failed(span, reason)
                span.add_event("wis2l.cache.fail_open", {"error.type": reason})
            outcome = "fail_open"
        elif self.lookup is not None:
            hit = self.lookup(result)
            if span is not None:
                span.set_attribute("wis2l.cache.hit", hit)
            outcome = "hit" if hit else "miss"
        else:
            outcome = "read" if self.operation in _READS else "write"
        self.measure(outcome)

    def measure(self, outcome: str | None) -> None:
        """The duration of a command that was sent, and the cache operation's outcome."""
        probe = self.probe
        if probe.ran and (duration := DB_DURATION.get()) is not None:
            attributes = {**self.base, "db.operation.name": self.operation}
            if probe.error is not None:
                attributes["error.type"] = type(probe.error).__qualname__
                if (code := _status_code(probe.error)) is not None:
                    attributes["db.response.status_code"] = code
            duration.record(probe.seconds, attributes)
        if outcome is not None:
            _count(self.cache, self.service, outcome)


async def observed_call(
    client: _Client,
    guard: Callable[..., Awaitable[Any]],
    op: str,
    default: Any,
    command: Callable[..., Awaitable[Any]],
    *args: Any,
    **kwargs: Any,
) -> Any:
    """Run ``guard(op, default, Probe(command), *args, **kwargs)`` (the client's guard,
    which runs a probe plainly) with a span around it and the metrics after it.

    Args:
        client: the Redis client (its namespace, mode, settings and outage state).
        guard: the client's guard.
        op: what the call does, for the logs.
        default: what the guard returns when it fails open.
        command: the redis-py method or Lua script.
        *args: the command's arguments (the first holds the key or the script's keys).
        **kwargs: the command's keyword arguments.
    """
    operation, summary, lookup = _describe(command)
    cache, service = _cache_of(client.namespace, args)
    probe = Probe(command)
    call = _Call(client, operation, lookup, cache, service, _base(client), probe)
    t = tracer()
    scope: contextlib.AbstractContextManager[Span | None]
    if t is None:
        scope = contextlib.nullcontext()
    else:
        from opentelemetry.trace import SpanKind

        attributes = {
            **call.base,
            "db.operation.name": operation,
            "db.query.summary": summary,
            "wis2l.cache.name": cache,
        }
        if service is not None:
            attributes["wis2l.cache.service"] = service
        scope = t.start_as_current_span(
            summary,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        )
    with scope as span:
        try:
            result = await guard(op, default, probe, *args, **kwargs)
        except BaseException as exc:
            call.failed(span, exc)
            raise
        call.finished(span, result)
        return result


def _skipped(client: _Client) -> str:
    """``error.type`` of a call the guard did not send: the breaker is open, or the client
    is not open."""
    return "breaker_open" if client.degraded else "not_open"


def _mark_failed(span: Span, reason: str) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("error.type", reason)
    span.set_status(Status(StatusCode.ERROR, f"redis skipped: {reason}"))


def _count(cache: str, service: str | None, outcome: str) -> None:
    if (inst := _INSTRUMENTS.get()) is None:
        return
    attributes = {"wis2l.cache.name": cache, "wis2l.cache.outcome": outcome}
    if cache == "store" and service is not None:
        attributes["wis2l.cache.service"] = service
    inst.operations.add(1, attributes)


def record_decision(policy: str, *, allowed: bool, fail_mode: str | None = None) -> None:
    """Count one rate limiter decision (``wis2l.ratelimit.decisions``).

    Args:
        policy: the limiter's policy name (``wis2l.ratelimit.policy``).
        allowed: ``wis2l.ratelimit.decision`` is ``allowed`` or ``denied``.
        fail_mode: set when Redis could not be asked and the limiter's fail mode decided
            (``open`` or ``closed``): ``wis2l.ratelimit.fail_mode``.
    """
    if (inst := _INSTRUMENTS.get()) is None:
        return
    attributes = {
        "wis2l.ratelimit.policy": policy,
        "wis2l.ratelimit.decision": "allowed" if allowed else "denied",
    }
    if fail_mode is not None:
        attributes["wis2l.ratelimit.fail_mode"] = fail_mode
    inst.decisions.add(1, attributes)
