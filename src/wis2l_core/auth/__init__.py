"""Identity and access (the ``auth`` extra): verify nocturnaID tokens, map them to users,
and check roles. The ASGI middleware lives in :mod:`wis2l_core.asgi`; its two classes
are re-exported here too.

Installing ``wis2l-core[auth]`` brings joserfc and httpx. Nothing here is imported by
``wis2l_core`` until it is asked for, and the names below are loaded on first access, so
``import wis2l_core.auth.principal`` does not load the verifier or the middleware.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wis2l_core.asgi import AuthMiddleware, RateLimitMiddleware
    from wis2l_core.auth.access import Access, Action
    from wis2l_core.auth.identity import Identity
    from wis2l_core.auth.principal import Principal

__all__ = [
    "Access",
    "Action",
    "AuthMiddleware",
    "Identity",
    "Principal",
    "RateLimitMiddleware",
]

_HOME = {
    "Access": "wis2l_core.auth.access",
    "Action": "wis2l_core.auth.access",
    "AuthMiddleware": "wis2l_core.asgi.auth",
    "Identity": "wis2l_core.auth.identity",
    "Principal": "wis2l_core.auth.principal",
    "RateLimitMiddleware": "wis2l_core.asgi.ratelimit",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
