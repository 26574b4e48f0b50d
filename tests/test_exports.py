"""The public surface: every name DESIGN.md promises imports from wis2l_core itself."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

import wis2l_core
from wis2l_core import errors

EXPORTED = [
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
"""The public surface, pinned: a name added or dropped must be added or dropped here too."""

PROMISED = {
    # settings and runtime
    "Settings",
    "Wis2l",
    "Transaction",
    # models
    "User",
    "Project",
    "Template",
    "Component",
    "DesignToken",
    "Build",
    "Deployment",
    "Event",
    "Page",
    # enums
    "Role",
    "Engine",
    "Language",
    "TokenCategory",
    "BuildStatus",
    "DeploymentStatus",
    "Environment",
    "Subsystem",
    # events
    "ComponentCreated",
    "ComponentUpdated",
    "ComponentDeleted",
    "BuildStarted",
    "BuildProgress",
    "BuildCompleted",
    "BuildFailed",
    "DeploymentStarted",
    "DeploymentCompleted",
    "DeploymentFailed",
    "TokenUpdated",
    "TokenDeleted",
    "TokensSynced",
    "UserCreated",
    "UserSignedIn",
    "UserRoleChanged",
    # errors
    "Wis2lError",
    "NotFound",
    "Conflict",
    "ValidationError",
    "InvalidTransition",
    "ServiceUnavailable",
    "ConfigError",
    "StartupError",
    # health
    "HealthReport",
}
"""Every class ../shared/DESIGN.md names (it says they import from wis2l_core itself)."""


def test_all_is_pinned() -> None:
    assert wis2l_core.__all__ == EXPORTED


def test_every_public_attribute_is_in_all() -> None:
    """As httpx's test_exported_members: nothing public is reachable but unlisted."""
    public = {
        name
        for name in dir(wis2l_core)
        if not name.startswith("_")
        and name != "TYPE_CHECKING"
        and not isinstance(getattr(wis2l_core, name), types.ModuleType)
    }
    assert public == set(wis2l_core.__all__)
    for name in wis2l_core.__all__:
        assert getattr(wis2l_core, name).__name__ == name


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        wis2l_core.Nope  # type: ignore[attr-defined]  # noqa: B018


def test_importing_models_and_repositories_loads_no_redis_or_nats() -> None:
    """The runtime (and with it redis-py and nats-py) loads on first use of ``Wis2l``."""
    code = (
        "import sys; import wis2l_core, wis2l_core.models, wis2l_core.catalogue,"
        " wis2l_core.db.users, wis2l_core.db.repositories;"
        " assert not {'nats', 'redis'} & set(sys.modules), 'loaded too early';"
        " from wis2l_core import Wis2l; assert {'nats', 'redis'} <= set(sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_design_names_are_exported() -> None:
    missing = PROMISED - set(wis2l_core.__all__)
    assert not missing, f"promised but not exported: {sorted(missing)}"


def test_exported_events_are_the_catalogue() -> None:
    from wis2l_core.catalogue import CATALOGUE

    for cls in CATALOGUE.values():
        assert getattr(wis2l_core, cls.__name__) is cls


def test_error_tree() -> None:
    assert issubclass(errors.InvalidTransition, errors.ValidationError)
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.Wis2lError)
        assert name in (errors.__doc__ or ""), f"{name} missing from the drawn tree"
    assert issubclass(errors.ValidationError, ValueError)
    assert issubclass(errors.NotFound, LookupError)
    assert issubclass(errors.ServiceUnavailable, ConnectionError)


def test_enums_are_str_enums_with_lowercase_values() -> None:
    assert wis2l_core.Engine.PICO8 == "pico8"
    for enum_cls in (
        wis2l_core.Role,
        wis2l_core.Engine,
        wis2l_core.Language,
        wis2l_core.TokenCategory,
        wis2l_core.BuildStatus,
        wis2l_core.DeploymentStatus,
        wis2l_core.Environment,
        wis2l_core.Subsystem,
    ):
        for member in enum_cls:
            assert isinstance(member, str)
            assert member.name == member.name.upper()
            assert member.value == member.value.lower()


def test_events_package_exports_the_whole_catalogue() -> None:
    """``wis2l_core.events`` re-exports the catalogue: its list is derived, so none is missed."""
    import wis2l_core.catalogue
    import wis2l_core.events

    for name in wis2l_core.catalogue.__all__:
        assert name in wis2l_core.events.__all__
        assert getattr(wis2l_core.events, name) is getattr(wis2l_core.catalogue, name)
