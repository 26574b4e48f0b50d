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
    UserCreated,
    UserRoleChanged,
    UserSignedIn,
)
from wis2l_core.config import AppEnvironment, Settings
from wis2l_core.errors import (
    ConfigError,
    Conflict,
    Forbidden,
    InvalidTransition,
    MigrationError,
    NotFound,
    SchemaMissing,
    ServiceUnavailable,
    StartupError,
    Unauthenticated,
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
    from wis2l_core.asgi import AuthMiddleware, RateLimitMiddleware
    from wis2l_core.auth import Action, Principal
    from wis2l_core.runtime import Transaction, Wis2l

__all__ = [
    "Action",
    "AppEnvironment",
    "AuthMiddleware",
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
    "Forbidden",
    "HealthReport",
    "HealthStatus",
    "InvalidTransition",
    "Language",
    "MigrationError",
    "NotFound",
    "Page",
    "Principal",
    "Project",
    "RateLimitMiddleware",
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
    "Unauthenticated",
    "User",
    "UserCreated",
    "UserRoleChanged",
    "UserSignedIn",
    "ValidationError",
    "Wis2l",
    "Wis2lError",
    "all_pages",
    "health_app",
    "to_record",
    "to_records",
]


_AUTH = frozenset({"Action", "AuthMiddleware", "Principal", "RateLimitMiddleware"})


def __getattr__(name: str) -> object:
    if name in ("Transaction", "Wis2l"):
        from wis2l_core import runtime

        return getattr(runtime, name)
    if name in _AUTH:  # the `auth` extra: joserfc and httpx load only when asked for
        from wis2l_core import auth

        return getattr(auth, name)
    raise AttributeError(f"module 'wis2l_core' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
