"""wis2l-core: the data layer of the WIS2L game-development platform.

``Wis2l`` and ``Transaction`` are imported on first use (PEP 562), so that importing a
model, a repository or the catalogue does not load the Redis and NATS clients.
"""

from typing import TYPE_CHECKING

from wis2l_core.asgi import health_app
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
from wis2l_core.config import AppEnvironment, Settings
from wis2l_core.errors import (
    ConfigError,
    Conflict,
    InvalidTransition,
    MigrationError,
    NotFound,
    SchemaMissing,
    ServiceUnavailable,
    StartupError,
    ValidationError,
    Wis2lError,
)
from wis2l_core.health import CheckResult, HealthReport, HealthStatus
from wis2l_core.models import (
    Build,
    BuildStatus,
    Component,
    Deployment,
    DeploymentStatus,
    DesignToken,
    Engine,
    Environment,
    Event,
    Language,
    Page,
    Project,
    Role,
    Subsystem,
    Template,
    TokenCategory,
    User,
)
from wis2l_core.notebook import all_pages, to_record, to_records

if TYPE_CHECKING:
    from wis2l_core.runtime import Transaction, Wis2l

__all__ = [
    "AppEnvironment",
    "Build",
    "BuildCompleted",
    "BuildFailed",
    "BuildProgress",
    "BuildStarted",
    "BuildStatus",
    "CheckResult",
    "Component",
    "ComponentCreated",
    "ComponentDeleted",
    "ComponentUpdated",
    "ConfigError",
    "Conflict",
    "Deployment",
    "DeploymentCompleted",
    "DeploymentFailed",
    "DeploymentStarted",
    "DeploymentStatus",
    "DesignToken",
    "DomainEvent",
    "Engine",
    "Environment",
    "Event",
    "HealthReport",
    "HealthStatus",
    "InvalidTransition",
    "Language",
    "MigrationError",
    "NotFound",
    "Page",
    "Project",
    "Role",
    "SchemaMissing",
    "ServiceUnavailable",
    "Settings",
    "StartupError",
    "Subsystem",
    "Template",
    "TokenCategory",
    "TokenDeleted",
    "TokenUpdated",
    "TokensSynced",
    "Transaction",
    "User",
    "ValidationError",
    "Wis2l",
    "Wis2lError",
    "all_pages",
    "health_app",
    "to_record",
    "to_records",
]


def __getattr__(name: str) -> object:
    if name in ("Transaction", "Wis2l"):
        from wis2l_core import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module 'wis2l_core' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
