"""The seed's subscribers: log the lifecycle events, and keep the token cache honest.

``register_seed_subscribers(bus, token_cache)`` registers them; the runtime calls it
before ``bus.start_subscribers()``.
"""

from __future__ import annotations

import logging
from typing import Protocol
from uuid import UUID

import attrs

from wis2l_core.catalogue import (
    BuildCompleted,
    BuildFailed,
    BuildProgress,
    BuildStarted,
    ComponentCreated,
    ComponentDeleted,
    ComponentUpdated,
    DeploymentCompleted,
    DeploymentFailed,
    DeploymentStarted,
    DomainEvent,
    TokenDeleted,
    TokensSynced,
    TokenUpdated,
)
from wis2l_core.events.bus import EventBus

__all__ = ["SEED_DURABLES", "TokenInvalidator", "register_seed_subscribers"]

log = logging.getLogger("wis2l_core.events.handlers")

SEED_DURABLES = ("wis2l-audit-log", "wis2l-token-cache")
"""The durable names the seed subscribers use (their consumers are
``<durable>-<entity>-<action>``)."""

_LOGGED: tuple[type[DomainEvent], ...] = (
    ComponentCreated,
    ComponentUpdated,
    ComponentDeleted,
    BuildStarted,
    BuildProgress,
    BuildCompleted,
    BuildFailed,
    DeploymentStarted,
    DeploymentCompleted,
    DeploymentFailed,
)


class TokenInvalidator(Protocol):
    """What the token handlers need from the token cache (``wis2l_core.cache.tokens``)."""

    async def invalidate(self, project_id: UUID) -> bool:
        """Forget the project's cached tokens; False if the cache was unreachable."""
        ...


class TokenCacheUnavailable(RuntimeError):
    """Raised by the token handlers so the event is delivered again later."""


async def log_event(event: DomainEvent) -> None:
    """Log a lifecycle event at INFO (``BuildProgress`` at DEBUG), with its fields."""
    level = logging.DEBUG if isinstance(event, BuildProgress) else logging.INFO
    if not log.isEnabledFor(level):
        return
    fields = {k: str(v) for k, v in _fields(event).items()}
    # Nested under one key: field names such as "name" would clash with LogRecord's.
    extra = {"event": event.type, "event_id": fields["id"], "event_fields": fields}
    log.log(level, "%s %s", event.type, fields, extra=extra)


def _fields(event: DomainEvent) -> dict[str, object]:
    return {f.name: getattr(event, f.name) for f in attrs.fields(type(event))}


def register_seed_subscribers(bus: EventBus, token_cache: TokenInvalidator | None = None) -> None:
    """Register the seed's handlers on ``bus``.

    - ``wis2l-audit-log``: logs every component, build and deployment event (new events
      only: a new deployment does not replay the stream's history into the log).
    - ``wis2l-token-cache`` (when ``token_cache`` is given): invalidates the project's
      cached tokens on ``TokenUpdated``, ``TokenDeleted`` and ``TokensSynced``; if the
      cache is unreachable the handler raises, so the event is retried with backoff.

    Args:
        bus: the event bus (subscriptions start with ``bus.start_subscribers()``).
        token_cache: anything with ``async invalidate(project_id) -> bool``.
    """
    for event_type in _LOGGED:
        bus.subscribe(event_type, log_event, durable=SEED_DURABLES[0], deliver="new")
    if token_cache is None:
        return
    cache = token_cache

    async def invalidate_tokens(event: TokenUpdated | TokenDeleted | TokensSynced) -> None:
        if not await cache.invalidate(event.project_id):
            raise TokenCacheUnavailable(f"token cache unavailable for {event.project_id}")
        log.debug("token cache invalidated for %s (%s)", event.project_id, event.type)

    bus.subscribe(TokenUpdated, invalidate_tokens, durable=SEED_DURABLES[1])
    bus.subscribe(TokenDeleted, invalidate_tokens, durable=SEED_DURABLES[1])
    bus.subscribe(TokensSynced, invalidate_tokens, durable=SEED_DURABLES[1])
