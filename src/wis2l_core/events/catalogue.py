"""The event catalogue: one frozen attrs class per event the platform publishes.

Every event has a subject ``<namespace>.<entity>.<action>`` (``wis2l.build.progress`` with
the default namespace), a ``type`` equal to ``<entity>.<action>``, and the common fields
``id`` (a UUID, also the ``Nats-Msg-Id`` header, so JetStream drops a repeat),
``occurred_at`` (UTC) and ``project_id``. On the wire an event is a JSON object of its
fields plus ``type``; UUIDs and times are strings (RFC 9562 / ISO 8601).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar
from uuid import UUID

import attrs

from wis2l_core.ids import uuid7
from wis2l_core.models import Environment, Language, Subsystem, TokenCategory

__all__ = [
    "CATALOGUE",
    "BuildCompleted",
    "BuildFailed",
    "BuildProgress",
    "BuildStarted",
    "ComponentCreated",
    "ComponentDeleted",
    "ComponentUpdated",
    "DeploymentCompleted",
    "DeploymentFailed",
    "DeploymentStarted",
    "DomainEvent",
    "TokenUpdated",
    "TokensSynced",
    "event_class",
]


def _now() -> datetime:
    return datetime.now(UTC)


@attrs.frozen(kw_only=True)
class DomainEvent:
    """The base of every catalogued event.

    Attributes:
        project_id: the project the event is about.
        id: unique per event; defaults to a new UUIDv7.
        occurred_at: when it happened; defaults to now, UTC.
    """

    type: ClassVar[str]
    """``<entity>.<action>``: the subject without its namespace."""
    subsystem: ClassVar[Subsystem]
    """The subsystem whose audit log records it."""

    project_id: UUID
    id: UUID = attrs.field(factory=uuid7)
    occurred_at: datetime = attrs.field(factory=_now)

    def subject(self, namespace: str = "wis2l") -> str:
        """The NATS subject, e.g. ``wis2l.build.progress``."""
        return f"{namespace}.{self.type}"


@attrs.frozen(kw_only=True)
class ComponentCreated(DomainEvent):
    """A SPARK component was generated and stored."""

    type: ClassVar[str] = "component.created"
    subsystem: ClassVar[Subsystem] = Subsystem.SPARK
    component_id: UUID
    name: str
    language: Language
    version: int


@attrs.frozen(kw_only=True)
class ComponentUpdated(DomainEvent):
    """A component changed; ``version`` is its new version."""

    type: ClassVar[str] = "component.updated"
    subsystem: ClassVar[Subsystem] = Subsystem.SPARK
    component_id: UUID
    name: str
    language: Language
    version: int


@attrs.frozen(kw_only=True)
class ComponentDeleted(DomainEvent):
    """A component was deleted."""

    type: ClassVar[str] = "component.deleted"
    subsystem: ClassVar[Subsystem] = Subsystem.SPARK
    component_id: UUID
    name: str


@attrs.frozen(kw_only=True)
class BuildStarted(DomainEvent):
    """A build moved from pending to building."""

    type: ClassVar[str] = "build.started"
    subsystem: ClassVar[Subsystem] = Subsystem.IGNIS
    build_id: UUID
    target: str


@attrs.frozen(kw_only=True)
class BuildProgress(DomainEvent):
    """A building build reported progress (0..100) without a status change."""

    type: ClassVar[str] = "build.progress"
    subsystem: ClassVar[Subsystem] = Subsystem.IGNIS
    build_id: UUID
    progress: int


@attrs.frozen(kw_only=True)
class BuildCompleted(DomainEvent):
    """A build finished; ``artifacts`` is its manifest."""

    type: ClassVar[str] = "build.completed"
    subsystem: ClassVar[Subsystem] = Subsystem.IGNIS
    build_id: UUID
    target: str
    artifacts: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class BuildFailed(DomainEvent):
    """A build failed (from pending or building)."""

    type: ClassVar[str] = "build.failed"
    subsystem: ClassVar[Subsystem] = Subsystem.IGNIS
    build_id: UUID
    target: str


@attrs.frozen(kw_only=True)
class DeploymentStarted(DomainEvent):
    """A deployment moved from pending to in_progress."""

    type: ClassVar[str] = "deployment.started"
    subsystem: ClassVar[Subsystem] = Subsystem.WAYPOINT
    deployment_id: UUID
    environment: Environment
    version: str


@attrs.frozen(kw_only=True)
class DeploymentCompleted(DomainEvent):
    """A deployment is live at ``url``."""

    type: ClassVar[str] = "deployment.completed"
    subsystem: ClassVar[Subsystem] = Subsystem.WAYPOINT
    deployment_id: UUID
    environment: Environment
    version: str
    url: str | None = None


@attrs.frozen(kw_only=True)
class DeploymentFailed(DomainEvent):
    """A deployment failed."""

    type: ClassVar[str] = "deployment.failed"
    subsystem: ClassVar[Subsystem] = Subsystem.WAYPOINT
    deployment_id: UUID
    environment: Environment
    version: str


@attrs.frozen(kw_only=True)
class TokenUpdated(DomainEvent):
    """A design token was created or its value changed (``version`` is the new one)."""

    type: ClassVar[str] = "token.updated"
    subsystem: ClassVar[Subsystem] = Subsystem.SLATE
    token_id: UUID
    name: str
    category: TokenCategory
    version: int


@attrs.frozen(kw_only=True)
class TokensSynced(DomainEvent):
    """A token set was synced: ``count`` tokens sent, ``changed`` of them new or changed."""

    type: ClassVar[str] = "token.synced"
    subsystem: ClassVar[Subsystem] = Subsystem.SLATE
    count: int
    changed: int


CATALOGUE: Mapping[str, type[DomainEvent]] = {
    cls.type: cls
    for cls in (
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
        TokenUpdated,
        TokensSynced,
    )
}
"""``type`` -> event class, for every catalogued event."""


def event_class(type_: str) -> type[DomainEvent]:
    """The class for an event ``type`` such as ``"build.progress"``.

    Raises:
        KeyError: the type is not in the catalogue.
    """
    return CATALOGUE[type_]
