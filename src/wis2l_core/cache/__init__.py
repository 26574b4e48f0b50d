"""Redis caches: the shared client, a generic cache, sessions, builds, tokens, rate limits."""

from wis2l_core.cache.builds import BuildCache
from wis2l_core.cache.client import RedisClient
from wis2l_core.cache.ratelimit import FailMode, RateLimit, RateLimiter
from wis2l_core.cache.sessions import Session, SessionStore
from wis2l_core.cache.store import Cache
from wis2l_core.cache.tokens import TokenCache

__all__ = [
    "BuildCache",
    "Cache",
    "FailMode",
    "RateLimit",
    "RateLimiter",
    "RedisClient",
    "Session",
    "SessionStore",
    "TokenCache",
]
