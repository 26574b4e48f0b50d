"""Role-based access control: ``Action``, the permission table, and ``Access``.

The table below is the one truth (docs/guides/identity.md prints it from here, and
``tests/test_auth_access.py`` checks every cell). Each cell is a :class:`Scope`:

- ``ANY``: on every project (or, for an action not about one project, allowed);
- ``OWN``: only on projects the user owns (``project.owner_id == user.id``);
- ``NONE``: never.

Asked without a project, a project action needs ``ANY``: "read the whole audit log" is
not "read my project's audit log". I/O-free: nothing here touches a server.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Protocol, TypeAlias
from uuid import UUID

from wis2l_core.auth.actions import Action
from wis2l_core.auth.principal import Principal
from wis2l_core.errors import Forbidden, Unauthenticated
from wis2l_core.models import Role

__all__ = [
    "PERMISSIONS",
    "PROJECT_ACTIONS",
    "Access",
    "Action",
    "Anonymous",
    "Owned",
    "Scope",
    "permissions_for",
]


class Scope(enum.StrEnum):
    """Where a role may do an action: on any project, on its own projects, or nowhere."""

    ANY = "any"
    OWN = "own"
    NONE = "none"


A, OWN, N = Scope.ANY, Scope.OWN, Scope.NONE

_TABLE: dict[Action, tuple[Scope, Scope, Scope]] = {
    # action                      viewer developer admin
    Action.PROJECT_READ: (A, A, A),
    Action.PROJECT_CREATE: (N, A, A),
    Action.PROJECT_UPDATE: (N, OWN, A),
    Action.PROJECT_DELETE: (N, OWN, A),
    Action.TEMPLATE_READ: (A, A, A),
    Action.TEMPLATE_CREATE: (N, N, A),
    Action.COMPONENT_READ: (A, A, A),
    Action.COMPONENT_CREATE: (N, OWN, A),
    Action.COMPONENT_UPDATE: (N, OWN, A),
    Action.COMPONENT_DELETE: (N, OWN, A),
    Action.TOKEN_READ: (A, A, A),
    Action.TOKEN_UPDATE: (N, OWN, A),
    Action.BUILD_READ: (A, A, A),
    Action.BUILD_CREATE: (N, OWN, A),
    Action.BUILD_UPDATE: (N, OWN, A),
    Action.DEPLOYMENT_READ: (A, A, A),
    Action.DEPLOYMENT_CREATE: (N, OWN, A),
    Action.DEPLOYMENT_UPDATE: (N, OWN, A),
    Action.AUDIT_READ: (N, OWN, A),
    Action.USER_READ: (N, N, A),
    Action.USER_MANAGE: (N, N, A),
}
_ROLES = (Role.VIEWER, Role.DEVELOPER, Role.ADMIN)

PERMISSIONS: Mapping[Role, Mapping[Action, Scope]] = MappingProxyType(
    {
        role: MappingProxyType({action: scopes[i] for action, scopes in _TABLE.items()})
        for i, role in enumerate(_ROLES)
    }
)
"""The permission table: ``PERMISSIONS[role][action]`` is a :class:`Scope`."""

PROJECT_ACTIONS: frozenset[Action] = frozenset(
    action
    for action in Action
    if action.value.split(":")[0] in ("project", "component", "token", "build", "deployment")
    and action is not Action.PROJECT_CREATE
) | {Action.AUDIT_READ}
"""The actions done to one project (ownership applies); the others are platform-wide."""

_GRANTED: Mapping[Role, frozenset[Action]] = MappingProxyType(
    {
        role: frozenset(a for a, scope in table.items() if scope is not Scope.NONE)
        for role, table in PERMISSIONS.items()
    }
)


def permissions_for(role: Role) -> frozenset[Action]:
    """The actions ``role`` may do somewhere (on its own projects at least).

    ``wis.identity`` stores them in :attr:`Principal.permissions`.

    Args:
        role: a :class:`~wis2l_core.Role` (or its value).

    Raises:
        ValueError: ``role`` is not a role.
    """
    return _GRANTED[Role(role)]


class Owned(Protocol):
    """What ``project=`` needs: a :class:`~wis2l_core.models.Project`, or anything with
    its ``owner_id``."""

    @property
    def owner_id(self) -> UUID:
        """The owning user's id."""
        ...


class Anonymous:
    """The caller on a public path when no (valid) credentials came: what the middleware
    puts in ``scope["user"]``. Starlette's and Litestar's ``request.user`` protocol, not
    authenticated."""

    __slots__ = ()

    @property
    def is_authenticated(self) -> bool:
        """Always false."""
        return False

    @property
    def display_name(self) -> str:
        """Empty."""
        return ""

    @property
    def identity(self) -> str:
        """Empty."""
        return ""

    def __repr__(self) -> str:
        return "Anonymous()"


Caller: TypeAlias = Principal | Anonymous | None
"""Who :meth:`Access.require` is asked about: ``request.user`` as the middleware sets it."""


class Access:
    """Checks a caller against the permission table (``wis.access``).

    A caller may do an action when the action is in ``principal.permissions`` (what
    ``wis.identity`` granted: the role's set, or less) and the table's scope for the
    principal's role allows it on ``project``. Both must hold: fail closed.
    """

    def can(self, principal: Caller, action: Action, project: Owned | None = None) -> bool:
        """Whether ``principal`` may do ``action`` (on ``project``, when given).

        Args:
            principal: the caller (``request.user``); anonymous or ``None`` may do nothing.
            action: an :class:`Action`.
            project: the project acted on (its ``owner_id`` decides ``OWN`` cells). Without
                one, a project action needs the ``ANY`` scope.
        """
        if not isinstance(principal, Principal):
            return False
        action = Action(action)
        if action not in principal.permissions:
            return False
        scope = PERMISSIONS[principal.role][action]
        if scope is Scope.ANY:
            return True
        if scope is Scope.NONE or project is None or action not in PROJECT_ACTIONS:
            return False
        return project.owner_id == principal.user.id

    def require(self, principal: Caller, action: Action, project: Owned | None = None) -> None:
        """Raise unless ``principal`` may do ``action`` (on ``project``, when given).

        Args:
            principal: the caller (``request.user``).
            action: an :class:`Action`.
            project: the project acted on; see :meth:`can`.

        Raises:
            Unauthenticated: no principal (anonymous): the caller should sign in
                (``code`` is ``None``: no credentials were sent).
            Forbidden: signed in, but not allowed (``action`` names it).
        """
        if not isinstance(principal, Principal):
            raise Unauthenticated("sign in to do this", code=None)
        if not self.can(principal, action, project):
            where = " on this project" if project is not None else ""
            raise Forbidden(
                f"role {principal.role.value!r} may not {Action(action).value}{where}",
                action=Action(action).value,
            )
