"""The public surface: every name DESIGN.md promises imports from wis2l_core itself."""

from __future__ import annotations

import wis2l_core
from wis2l_core import errors

PROMISED = {
    # settings and runtime
    "Settings",
    "Wis2l",
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
    # errors
    "Wis2lError",
    "NotFound",
    "Conflict",
    "ValidationError",
    "InvalidTransition",
    "ServiceUnavailable",
    "ConfigError",
    "StartupError",
}


def test_all_is_sorted_and_complete() -> None:
    assert list(wis2l_core.__all__) == sorted(wis2l_core.__all__)
    for name in wis2l_core.__all__:
        assert getattr(wis2l_core, name) is not None
    missing = PROMISED - set(wis2l_core.__all__)
    assert not missing, f"promised but not exported: {sorted(missing)}"


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
