"""The permission table: every cell of the one in docs/guides/identity.md, checked through
``Access.can`` / ``Access.require`` on an owned project, another's project and no project."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import attrs
import pytest

from wis2l_core import Action, Principal, Role, User
from wis2l_core.auth.access import (
    PERMISSIONS,
    PROJECT_ACTIONS,
    Access,
    Anonymous,
    Scope,
    permissions_for,
)
from wis2l_core.errors import Forbidden, Unauthenticated

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guides" / "identity.md"
ROLES = (Role.VIEWER, Role.DEVELOPER, Role.ADMIN)
CELL = {"any": Scope.ANY, "yes": Scope.ANY, "own": Scope.OWN, "no": Scope.NONE}
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def documented_table() -> dict[Action, dict[Role, Scope]]:
    """The permission table as the guide prints it, one row per action."""
    rows = re.findall(
        r"^\| `Action\.(\w+)` \(`[a-z]+:[a-z]+`\) \| (\w+) \| (\w+) \| (\w+) \|$",
        GUIDE.read_text(encoding="utf-8"),
        re.M,
    )
    return {
        Action[name]: dict(zip(ROLES, (CELL[c] for c in cells), strict=True))
        for name, *cells in rows
    }


TABLE = documented_table()
CELLS = [(action, role) for action in Action for role in ROLES]


@attrs.frozen
class Owned:
    owner_id: UUID


def principal(role: Role, *, permissions: frozenset[Action] | None = None) -> Principal:
    user = User(
        id=uuid4(),
        email="ada@example.com",
        name="Ada",
        subject="nocturna|ada",
        role=role,
        created_at=NOW,
        updated_at=NOW,
    )
    granted = permissions_for(role) if permissions is None else permissions
    return Principal(user=user, claims={"sub": user.subject}, permissions=granted)


def test_the_guide_lists_every_action_once_and_matches_the_code() -> None:
    assert set(TABLE) == set(Action)
    assert {a: {r: PERMISSIONS[r][a] for r in ROLES} for a in Action} == TABLE


def test_values_are_resource_verb_and_unique() -> None:
    assert len({a.value for a in Action}) == len(Action)
    assert all(re.fullmatch(r"[a-z]+:[a-z]+", a.value) for a in Action)
    assert Action.PROJECT_READ == "project:read"
    assert Action.USER_MANAGE == "user:manage"


@pytest.mark.parametrize(("action", "role"), CELLS, ids=[f"{a.value}-{r.value}" for a, r in CELLS])
def test_every_cell(action: Action, role: Role) -> None:
    """Own project, someone else's, and no project: what the documented cell says."""
    scope = TABLE[action][role]
    access = Access()
    caller = principal(role)
    own, theirs = Owned(caller.user.id), Owned(uuid4())
    if action in PROJECT_ACTIONS:
        expected = {
            "own": scope is not Scope.NONE,
            "theirs": scope is Scope.ANY,
            "none": scope is Scope.ANY,
        }
    else:  # platform-wide: a project changes nothing
        assert scope is not Scope.OWN
        allowed = scope is Scope.ANY
        expected = {"own": allowed, "theirs": allowed, "none": allowed}
    got = {
        "own": access.can(caller, action, own),
        "theirs": access.can(caller, action, theirs),
        "none": access.can(caller, action),
    }
    assert got == expected
    for where, project in (("own", own), ("theirs", theirs), ("none", None)):
        if expected[where]:
            access.require(caller, action, project)
        else:
            with pytest.raises(Forbidden) as refused:
                access.require(caller, action, project)
            assert refused.value.action == action.value
            assert role.value in str(refused.value)
    assert (action in permissions_for(role)) == (scope is not Scope.NONE)


def test_ownership_in_words() -> None:
    """The rules the issue states, spelled out (a typo in the table would break one)."""
    access = Access()
    viewer, dev, admin = (principal(r) for r in ROLES)
    mine, other = Owned(dev.user.id), Owned(uuid4())
    assert access.can(dev, Action.PROJECT_UPDATE, mine)
    assert not access.can(dev, Action.PROJECT_UPDATE, other)
    assert access.can(dev, Action.PROJECT_READ, other)
    assert access.can(dev, Action.BUILD_CREATE, mine)
    assert not access.can(dev, Action.DEPLOYMENT_CREATE, other)
    assert not access.can(dev, Action.USER_MANAGE)
    assert not access.can(dev, Action.AUDIT_READ)  # the whole log: admins only
    assert access.can(dev, Action.AUDIT_READ, mine)
    assert all(access.can(admin, a, other) and access.can(admin, a) for a in Action)
    owned_by_viewer = Owned(viewer.user.id)
    assert not access.can(viewer, Action.PROJECT_UPDATE, owned_by_viewer)  # only reads
    readable = {a for a in Action if access.can(viewer, a, owned_by_viewer)}
    assert readable == {a for a in Action if a.value.endswith(":read")} - {
        Action.AUDIT_READ,
        Action.USER_READ,
    }


def test_permissions_narrow_what_the_role_grants() -> None:
    """Fail closed: an action missing from ``principal.permissions`` is refused even for
    an admin, and an empty set (a Principal built by hand) grants nothing."""
    access = Access()
    admin = principal(Role.ADMIN, permissions=frozenset({Action.PROJECT_READ}))
    assert access.can(admin, Action.PROJECT_READ)
    assert not access.can(admin, Action.PROJECT_UPDATE, Owned(admin.user.id))
    bare = principal(Role.ADMIN, permissions=frozenset())
    assert not any(access.can(bare, a) for a in Action)
    # ...and a wider set than the role's grants no more than the role
    viewer = principal(Role.VIEWER, permissions=frozenset(Action))
    assert not access.can(viewer, Action.PROJECT_UPDATE, Owned(viewer.user.id))


@pytest.mark.parametrize("caller", [None, Anonymous()], ids=["none", "anonymous"])
def test_anonymous_is_unauthenticated_not_forbidden(caller: Anonymous | None) -> None:
    access = Access()
    assert not access.can(caller, Action.PROJECT_READ)
    with pytest.raises(Unauthenticated) as refused:
        access.require(caller, Action.PROJECT_READ)
    assert refused.value.code is None


def test_string_values_are_accepted_and_unknown_ones_refused() -> None:
    access = Access()
    dev = principal(Role.DEVELOPER)
    assert access.can(dev, Action("project:read"))
    with pytest.raises(ValueError, match="project:fly"):
        access.can(dev, "project:fly")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="root"):
        permissions_for("root")  # type: ignore[arg-type]


def test_anonymous_follows_the_request_user_protocol() -> None:
    anonymous = Anonymous()
    assert anonymous.is_authenticated is False
    assert (anonymous.display_name, anonymous.identity) == ("", "")
    assert principal(Role.VIEWER).is_authenticated is True
