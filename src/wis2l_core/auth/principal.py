"""``Principal``: who is calling, once a token has been verified and mapped to a user."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from wis2l_core.models import Role, User

if TYPE_CHECKING:
    from wis2l_core.auth.actions import Action

__all__ = ["Principal"]


@attrs.frozen
class Principal:
    """An authenticated caller: the user, the token's verified claims and what the role
    grants. ``wis.identity.authenticate(token)`` makes one; the middleware puts it in
    ``scope["user"]``.

    Attributes:
        user: the ``User`` row the token's ``sub`` maps to.
        claims: the verified claims of the token (read-only).
        permissions: the actions the user's role grants on any project it may touch;
            ownership is checked by ``wis.access.require(principal, action, project=)``.
    """

    user: User
    claims: Mapping[str, Any] = attrs.field(repr=False)
    permissions: frozenset[Action] = attrs.field(repr=False, default=frozenset())

    @property
    def role(self) -> Role:
        """The user's role (``users.role``)."""
        return self.user.role

    @property
    def subject(self) -> str:
        """The token's ``sub``."""
        return self.user.subject

    # Starlette's and Litestar's ``request.user`` protocol
    @property
    def is_authenticated(self) -> bool:
        """Always true: an anonymous caller has no ``Principal``."""
        return True

    @property
    def display_name(self) -> str:
        """The user's name."""
        return self.user.name

    @property
    def identity(self) -> str:
        """The user's id, as a string."""
        return str(self.user.id)
