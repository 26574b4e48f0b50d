"""Identity and access (the ``auth`` extra): verify nocturnaID tokens, map them to users,
check roles, and guard ASGI apps.

Installing ``wis2l-core[auth]`` brings joserfc and httpx. Nothing here is imported by
``wis2l_core`` until it is asked for.
"""

from __future__ import annotations

from wis2l_core.auth.access import Access, Action
from wis2l_core.auth.identity import Identity
from wis2l_core.auth.middleware import AuthMiddleware, RateLimitMiddleware
from wis2l_core.auth.principal import Principal

__all__ = [
    "Access",
    "Action",
    "AuthMiddleware",
    "Identity",
    "Principal",
    "RateLimitMiddleware",
]
