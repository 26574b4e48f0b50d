"""``Action``: what a caller may do, the vocabulary of the permission table.

A module of its own, below both :mod:`wis2l_core.auth.principal` (a principal holds the
actions its role grants) and :mod:`wis2l_core.auth.access` (the table), so neither
imports the other's floor. ``wis2l_core.auth.access.Action`` is the same class.
"""

from __future__ import annotations

import enum

__all__ = ["Action"]


class Action(enum.StrEnum):
    """Something a caller may do. Values are ``<resource>:<verb>``, so they also serve
    as Starlette ``@requires(...)`` scopes (the middleware lists them in
    ``request.auth.scopes``)."""

    PROJECT_READ = "project:read"
    PROJECT_CREATE = "project:create"
    PROJECT_UPDATE = "project:update"
    PROJECT_DELETE = "project:delete"
    TEMPLATE_READ = "template:read"
    TEMPLATE_CREATE = "template:create"
    COMPONENT_READ = "component:read"
    COMPONENT_CREATE = "component:create"
    COMPONENT_UPDATE = "component:update"
    COMPONENT_DELETE = "component:delete"
    TOKEN_READ = "token:read"  # noqa: S105 (design tokens, not a secret)
    TOKEN_UPDATE = "token:update"  # noqa: S105
    BUILD_READ = "build:read"
    BUILD_CREATE = "build:create"
    BUILD_UPDATE = "build:update"
    DEPLOYMENT_READ = "deployment:read"
    DEPLOYMENT_CREATE = "deployment:create"
    DEPLOYMENT_UPDATE = "deployment:update"
    AUDIT_READ = "audit:read"
    USER_READ = "user:read"
    USER_MANAGE = "user:manage"
