"""The middleware's former home, kept so that ``wis2l_core.auth.middleware.AuthMiddleware``
and the other names below still import: they live in :mod:`wis2l_core.asgi` now
(:mod:`~wis2l_core.asgi.auth`, :mod:`~wis2l_core.asgi.ratelimit`)."""

from wis2l_core.asgi.auth import ANONYMOUS, AuthMiddleware, Credentials
from wis2l_core.asgi.ratelimit import RateLimitMiddleware

__all__ = ["ANONYMOUS", "AuthMiddleware", "Credentials", "RateLimitMiddleware"]
