"""Turning nats-py exceptions into wis2l-core errors, cause kept: the one place it happens.

Code that talks to NATS wraps the calls in :func:`map_nats_errors` (as ``map_errors`` for
PostgreSQL and ``RedisClient.call`` for Redis); :func:`translate` is the table behind it.
The tuples and predicates name what nats-py raises, for the few places that handle a
failure without raising it (a relay's unacknowledged batch, a subscriber's retries).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import nats.errors
import nats.js.errors

from wis2l_core.errors import ConfigError, ServiceUnavailable, Wis2lError

__all__ = [
    "ELECTING",
    "LEADERLESS",
    "NATS_ERRORS",
    "PUBLISH_ERRORS",
    "map_nats_errors",
    "stream_missing",
    "translate",
]

NATS_ERRORS: tuple[type[Exception], ...] = (nats.errors.Error, OSError, TimeoutError)
"""What nats-py raises when NATS is down, slow or refuses a request."""

LEADERLESS: tuple[type[Exception], ...] = (
    nats.errors.NoRespondersError,
    nats.js.errors.ServiceUnavailableError,
)
"""The answers of a replicated stream or consumer while it elects a leader (besides none
in time): no responders (503), or JetStream's "temporarily unavailable"."""

ELECTING: tuple[type[Exception], ...] = (TimeoutError, *LEADERLESS)
""":data:`LEADERLESS`, or no answer in time: a stream info request during an election."""

PUBLISH_ERRORS: tuple[type[Exception], ...] = (*NATS_ERRORS, ValueError)
"""What a nats-py publish raises (it checks subjects and headers with ``ValueError``)."""

_STREAM_NOT_FOUND = 10059


def stream_missing(exc: BaseException) -> bool:
    """True when JetStream says the stream does not exist (deleted, or a server that
    restarted empty)."""
    return isinstance(exc, nats.js.errors.NotFoundError) and exc.err_code == _STREAM_NOT_FOUND


def translate(exc: BaseException, doing: str = "", *, config: str | None = None) -> Wis2lError:
    """The wis2l-core error for an exception of a NATS call; the caller raises it ``from``.

    Args:
        exc: what the call raised.
        doing: what was being done, for the message: ``"nats: <doing>: <error>"``.
        config: the setting to blame for a ``ValueError`` (nats-py checks names before
            sending): it becomes a ``ConfigError`` naming it.

    Returns:
        ``exc`` itself when it is already a wis2l-core error; ``ServiceUnavailable``
        (``service="nats"``) for NATS down, slow or refusing, and for anything else
        nats-py raised (its type named); ``ConfigError`` for a bad name when ``config``.
    """
    if isinstance(exc, Wis2lError):
        return exc
    prefix = f"nats: {doing}: " if doing else "nats: "
    if isinstance(exc, NATS_ERRORS):
        return ServiceUnavailable(f"{prefix}{str(exc) or type(exc).__name__}", service="nats")
    if config is not None and isinstance(exc, ValueError):
        return ConfigError(f"{prefix}{exc}", variable=config)
    return ServiceUnavailable(f"{prefix}{type(exc).__name__}: {exc}", service="nats")


@contextmanager
def map_nats_errors(
    doing: str = "", *, config: str | None = None, unexpected: bool = False
) -> Iterator[None]:
    """Raise what :func:`translate` makes of a nats-py exception, cause kept.

    wis2l-core errors pass through. Args as :func:`translate`, and:

    Args:
        unexpected: translate every other exception too (nats-py raises ``ValueError``
            and others of its own from a publish); otherwise only NATS's own errors
            (and ``ValueError`` when ``config`` names a setting) are translated.
    """
    try:
        yield
    except Wis2lError:
        raise
    except Exception as exc:
        known = isinstance(exc, NATS_ERRORS) or (config is not None and isinstance(exc, ValueError))
        if not (known or unexpected):
            raise
        raise translate(exc, doing, config=config) from exc
