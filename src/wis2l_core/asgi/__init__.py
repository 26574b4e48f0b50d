"""The ASGI wing: plain ASGI 3 apps and middleware, no framework imported.

- :mod:`~wis2l_core.asgi.health`: ``health_app(wis)``, the health probes;
- :mod:`~wis2l_core.asgi.auth`: ``AuthMiddleware`` (and :class:`Credentials`);
- :mod:`~wis2l_core.asgi.ratelimit`: ``RateLimitMiddleware``;
- ``_http``: the ASGI type aliases and shared helpers; ``_origin``: the one CSRF rule.

This module only re-exports. The middlewares are loaded on first access (PEP 562), so
``health_app`` does not load the Redis client or the identity work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wis2l_core.asgi._http import ASGIApp, Message, Receive, Scope, Send
from wis2l_core.asgi.health import HealthApp, HealthSource, health_app

if TYPE_CHECKING:
    from wis2l_core.asgi.auth import ANONYMOUS, AuthMiddleware, Credentials
    from wis2l_core.asgi.ratelimit import RateLimitMiddleware

__all__ = [
    "ANONYMOUS",
    "ASGIApp",
    "AuthMiddleware",
    "Credentials",
    "HealthApp",
    "HealthSource",
    "Message",
    "RateLimitMiddleware",
    "Receive",
    "Scope",
    "Send",
    "health_app",
]

_AUTH = frozenset({"ANONYMOUS", "AuthMiddleware", "Credentials"})


def __getattr__(name: str) -> object:
    if name in _AUTH:
        from wis2l_core.asgi import auth

        return getattr(auth, name)
    if name == "RateLimitMiddleware":
        from wis2l_core.asgi.ratelimit import RateLimitMiddleware

        return RateLimitMiddleware
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
