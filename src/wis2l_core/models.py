"""The platform's records as frozen attrs classes, and the enums their fields take.

Models are what repositories return; they are immutable and compare by value. Enums are
``StrEnum``: upper-case names, lower-case values (``Engine.PICO8 == "pico8"``), so they
go to JSON, SQL and logs as plain strings.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

import attrs

__all__ = [
    "Build",
    "BuildStatus",
    "Component",
    "Deployment",
    "DeploymentStatus",
    "DesignToken",
    "Engine",
    "Environment",
    "Event",
    "Language",
    "Page",
    "Project",
    "Role",
    "Subsystem",
    "Template",
    "TokenCategory",
    "User",
]

JSON = Any
"""A JSON value: dict, list, str, int, float, bool or None."""

T = TypeVar("T")


class Role(enum.StrEnum):
    """What a user may do on the platform."""

    VIEWER = "viewer"
    DEVELOPER = "developer"
    ADMIN = "admin"


class Engine(enum.StrEnum):
    """The game engine a project or template targets."""

    UNITY = "unity"
    GODOT = "godot"
    PICO8 = "pico8"
    UNREAL = "unreal"
    GAMEMAKER = "gamemaker"
    DEFOLD = "defold"
    LOVE2D = "love2d"
    BEVY = "bevy"
    WEB = "web"


class Language(enum.StrEnum):
    """The language of a generated component's code."""

    CSHARP = "csharp"
    GLSL = "glsl"
    HLSL = "hlsl"
    GDSCRIPT = "gdscript"
    LUA = "lua"
    CPP = "cpp"
    JAVASCRIPT = "javascript"
    TYPESCRIPT = "typescript"
    PYTHON = "python"
    RUST = "rust"
    OTHER = "other"


class TokenCategory(enum.StrEnum):
    """The kind of a design token (SLATE)."""

    COLOR = "color"
    SPACING = "spacing"
    TYPOGRAPHY = "typography"
    SHADOW = "shadow"
    RADIUS = "radius"
    BORDER = "border"
    OPACITY = "opacity"
    SIZING = "sizing"
    MOTION = "motion"
    Z_INDEX = "z_index"
    BREAKPOINT = "breakpoint"
    OTHER = "other"


class BuildStatus(enum.StrEnum):
    """Where a build is: pending -> building -> completed | failed (pending -> failed too)."""

    PENDING = "pending"
    BUILDING = "building"
    COMPLETED = "completed"
    FAILED = "failed"


class DeploymentStatus(enum.StrEnum):
    """Where a deployment is: pending -> in_progress -> completed | failed."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"


class Environment(enum.StrEnum):
    """Where a deployment goes (WAYPOINT)."""

    STAGING = "staging"
    PRODUCTION = "production"


class Subsystem(enum.StrEnum):
    """The platform subsystem an audit event belongs to."""

    IGNITION = "ignition"
    SPARK = "spark"
    SLATE = "slate"
    IGNIS = "ignis"
    WAYPOINT = "waypoint"
    IDENTITY = "identity"


@attrs.frozen(kw_only=True)
class User:
    """A person signed in through nocturnaID.org; ``subject`` is the JWT ``sub``."""

    id: UUID
    email: str
    name: str
    subject: str
    role: Role
    created_at: datetime
    updated_at: datetime


@attrs.frozen(kw_only=True)
class Project:
    """A game project on one engine, owned by a user, maybe started from a template."""

    id: UUID
    owner_id: UUID
    name: str
    slug: str
    engine: Engine
    template_id: UUID | None
    description: str | None
    metadata: Mapping[str, JSON]
    created_at: datetime
    updated_at: datetime


@attrs.frozen(kw_only=True)
class Template:
    """An IGNITION project template: a file tree for one engine."""

    id: UUID
    slug: str
    name: str
    engine: Engine
    description: str | None
    files: Mapping[str, JSON]
    created_at: datetime
    updated_at: datetime


@attrs.frozen(kw_only=True)
class Component:
    """A SPARK AI-generated code component; ``version`` goes up by one on each update."""

    id: UUID
    project_id: UUID
    name: str
    language: Language
    code: str
    prompt: str | None
    model: str | None
    experts: tuple[str, ...]
    metadata: Mapping[str, JSON]
    version: int
    created_at: datetime
    updated_at: datetime


@attrs.frozen(kw_only=True)
class DesignToken:
    """A SLATE design token; ``version`` goes up only when ``value`` changes."""

    id: UUID
    project_id: UUID
    name: str
    category: TokenCategory
    group: str | None
    value: JSON
    version: int
    created_at: datetime
    updated_at: datetime


@attrs.frozen(kw_only=True)
class Build:
    """An IGNIS build of a project for one target; ``logs`` only grows."""

    id: UUID
    project_id: UUID
    target: str
    status: BuildStatus
    progress: int
    artifacts: Mapping[str, JSON]
    logs: str
    started_at: datetime | None
    finished_at: datetime | None
    created_at: datetime
    updated_at: datetime


@attrs.frozen(kw_only=True)
class Deployment:
    """A WAYPOINT deployment of a project version to an environment."""

    id: UUID
    project_id: UUID
    build_id: UUID | None
    environment: Environment
    status: DeploymentStatus
    version: str
    url: str | None
    created_at: datetime
    updated_at: datetime


@attrs.frozen(kw_only=True)
class Event:
    """An audit-log row; also the outbox: ``published_at`` is set once JetStream has it."""

    id: UUID
    type: str
    subsystem: Subsystem
    project_id: UUID | None
    payload: Mapping[str, JSON]
    published_at: datetime | None
    created_at: datetime
    updated_at: datetime


@attrs.frozen
class Page(Generic[T]):
    """One page of a list call.

    Attributes:
        items: the rows of this page, in the list's order.
        next_cursor: pass as ``after=`` to get the next page; ``None`` on the last page.
    """

    items: tuple[T, ...]
    next_cursor: str | None = None

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)
