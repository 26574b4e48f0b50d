"""Build artifact manifests by cache key (7 days): ``BuildCache``.

IGNIS looks a build's inputs up by a cache key (a hash of sources, engine and target)
and reuses the artifacts manifest of an earlier build with the same key. Keys are
``<namespace>:build:<key>``; the cache fails open like every cache.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import attrs

from wis2l_core.cache.client import RedisClient
from wis2l_core.cache.store import Cache

__all__ = ["BuildCache"]

SERVICE = "build"


@attrs.define(eq=False)
class BuildCache:
    """Artifacts manifests (JSON objects) by build cache key.

    Args:
        client: the shared :class:`RedisClient`.
        ttl: how long a manifest is kept (default 7 days).
    """

    _client: RedisClient
    ttl: timedelta = attrs.field(default=timedelta(days=7), kw_only=True)
    _cache: Cache = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._cache = Cache(self._client, SERVICE, ttl=self.ttl)

    def key(self, key: str) -> str:
        """The full Redis key that holds ``key``'s manifest."""
        return self._cache.key(key)

    async def get(self, key: str) -> Mapping[str, Any] | None:
        """The manifest stored under ``key``, or None (a miss, or Redis unavailable)."""
        manifest = await self._cache.get(key)
        return manifest if isinstance(manifest, dict) else None

    async def set(self, key: str, artifacts: Mapping[str, Any]) -> bool:
        """Store ``artifacts`` under ``key`` for ``ttl``.

        Returns:
            True if stored, False if skipped because Redis is unavailable.

        Raises:
            TypeError: ``artifacts`` is not JSON-serializable.
        """
        return await self._cache.set(key, dict(artifacts))

    async def invalidate(self, key: str) -> bool:
        """Forget ``key``'s manifest. Returns True once Redis confirms it is gone, False
        if Redis was unavailable (retry later if a stale manifest matters)."""
        return await self._cache.invalidate(key)
