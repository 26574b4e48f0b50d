"""The checks the runtime runs, the protocols they take, and how a failure reads.

A check is a zero-argument coroutine function that returns a mapping of details (or
``None``) and raises when its service is not healthy. The check functions take small
protocols (:class:`Pingable`, :class:`HasBacklog`) or a bare client
(:func:`stream_check`: a JetStream context), so this module needs neither the cache nor
the events package, and ``wis2l health`` runs the same checks on connections of its own.
:func:`describe_error` turns what a check raised into the report's one-line, secret-free
``error``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from wis2l_core._secrets import scrub
from wis2l_core.errors import ServiceUnavailable

if TYPE_CHECKING:
    from nats.js import JetStreamContext

    from wis2l_core.db.pool import Database

__all__ = [
    "MAX_ERROR_LENGTH",
    "Backlog",
    "Check",
    "CheckFailed",
    "HasBacklog",
    "Pingable",
    "database_check",
    "describe_error",
    "outbox_check",
    "ping_check",
    "stream_check",
]

Check = Callable[[], Awaitable[Mapping[str, Any] | None]]
"""A health check: returns details (or ``None``) when healthy, raises when not."""

MAX_ERROR_LENGTH = 200
"""Error messages in a report are cut to this many characters."""


class CheckFailed(Exception):
    """Raised by a check that reached its service but judges it unhealthy.

    Its message is the report's ``error`` as is (no exception type in front), and its
    ``details`` still show in the report.

    Args:
        message: what is wrong, e.g. ``"oldest unpublished event is 95 s old"``.
        details: facts to report with the failure.
    """

    def __init__(self, message: str, *, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details: Mapping[str, Any] = dict(details or {})


class Pingable(Protocol):
    """A client that can check its server (``RedisClient``, the event bus)."""

    async def ping(self) -> object:
        """Return (details or ``None``) when the server answers; raise when not."""
        ...


class Backlog(Protocol):
    """The outbox backlog: events written but not yet published."""

    @property
    def size(self) -> int:
        """How many events wait."""
        ...

    @property
    def oldest_age_s(self) -> float | None:
        """Seconds the oldest one has waited, ``None`` when none wait."""
        ...


class HasBacklog(Protocol):
    """The outbox relay, seen from the health check."""

    async def backlog(self) -> Backlog:
        """Measure the backlog."""
        ...


async def database_check(database: Database) -> Mapping[str, Any] | None:
    """Check the schema on a pooled connection (one query); report the pool's occupancy.

    Raises:
        ServiceUnavailable: the pool is not open or the database does not answer.
        SchemaMissing: a migration this library ships is not applied.
    """
    from wis2l_core.db.migrate import check_schema

    async with database.connection() as conn:
        await check_schema(conn)
    stats = database.pool.get_stats()
    return {
        "pool_size": stats.get("pool_size", 0),
        "pool_available": stats.get("pool_available", 0),
        "requests_waiting": stats.get("requests_waiting", 0),
    }


async def ping_check(target: Pingable) -> Mapping[str, Any] | None:
    """Ping ``target``; its answer becomes the details when it is a mapping."""
    answer = await target.ping()
    return answer if isinstance(answer, Mapping) else None


async def stream_check(js: JetStreamContext, stream: str) -> Mapping[str, Any]:
    """Check JetStream and the event stream: the account's stream count and the stream's
    message count (two JetStream API calls).

    A missing stream is a failure, as in ``EventBus.ping``: the runtime creates the
    stream at start, so after that its absence means events cannot be published.

    Raises:
        ServiceUnavailable: the stream is missing.
        nats.errors.Error: JetStream did not answer (the caller's boundary translates).
    """
    from nats.js.errors import NotFoundError  # nats-py loads with the runtime, not before

    account = await js.account_info()
    try:
        info = await js.stream_info(stream)
    except NotFoundError as exc:
        raise ServiceUnavailable(f"nats: stream {stream} is missing", service="nats") from exc
    return {"streams": account.streams, "stream": stream, "stream_messages": info.state.messages}


async def outbox_check(relay: HasBacklog, *, max_age: float = 60.0) -> Mapping[str, Any]:
    """Measure the outbox backlog; fail when the oldest waiting event is too old.

    Args:
        relay: the outbox relay.
        max_age: seconds an unpublished event may wait before the check fails.

    Raises:
        CheckFailed: the oldest unpublished event waited longer than ``max_age``.
    """
    backlog = await relay.backlog()
    age = backlog.oldest_age_s
    details = {"size": backlog.size, "oldest_age_s": None if age is None else round(age, 3)}
    if age is not None and age > max_age:
        raise CheckFailed(
            f"oldest unpublished event waited {age:.0f} s (limit {max_age:g} s), "
            f"{backlog.size} waiting",
            details=details,
        )
    return details


def describe_error(exc: BaseException, secrets: Iterable[str] = ()) -> str:
    """A one-line message for ``exc``: ``"Type: message"``, scrubbed and cut short.

    Passwords and tokens in URLs (every form :func:`wis2l_core.config.redact_url` knows),
    ``password=...``-style values and every string in ``secrets`` are replaced by ``***``
    before the message is cut to :data:`MAX_ERROR_LENGTH` characters. A
    :class:`CheckFailed` message is used as is, without its type.

    Args:
        exc: what a check (or a start, or a request) raised.
        secrets: known secrets to mask (see :func:`wis2l_core.health.secrets_of`).

    Returns:
        The message, at most :data:`MAX_ERROR_LENGTH` characters.
    """
    # Scrub before the blanks are squeezed: a secret may hold a newline or two spaces.
    text = " ".join(scrub(str(exc), secrets).split())
    if not isinstance(exc, CheckFailed):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if len(text) > MAX_ERROR_LENGTH:
        text = text[: MAX_ERROR_LENGTH - 3] + "..."
    return text
