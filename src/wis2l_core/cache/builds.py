"""Build artifact manifests by cache key (7 days): ``BuildCache``.

IGNIS looks a build's inputs up by a cache key (a hash of sources, engine and target)
and reuses the artifacts manifest of an earlier build with the same key. Keys are
``<namespace>:build:<key>``; the cache fails open like every cache. A manifest is a JSON
object, like ``Build.artifacts``: anything else is refused, never reshaped.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import attrs

from wis2l_core.cache._input import encode_json
from wis2l_core.cache.client import RedisClient
from wis2l_core.cache.store import Cache, ttl_ms
from wis2l_core.errors import ValidationError

__all__ = ["BuildCache"]

SERVICE = "build"


class _BuildStore(Cache):
    """The generic cache on the reserved ``build`` service (only BuildCache uses it)."""

    def _check_service(self) -> None:
        pass


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
    _ttl_ms: int = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._cache = _BuildStore(self._client, SERVICE, ttl=self.ttl)
        self._ttl_ms = ttl_ms(self.ttl)

    def key(self, key: str) -> str:
        """The full Redis key that holds ``key``'s manifest (``key`` is encoded as in
        :meth:`Cache.key`).

        Raises:
            ValidationError: ``key`` is not text of 1 to 1024 characters.
        """
        return self._cache.key(key)

    async def get(self, key: str) -> Mapping[str, Any] | None:
        """The manifest stored under ``key``, or None (a miss, or Redis unavailable).

        Raises:
            ValidationError: ``key`` is not text of 1 to 1024 characters.
        """
        manifest = await self._cache.get(key)
        return manifest if isinstance(manifest, dict) else None

    async def set(self, key: str, artifacts: Mapping[str, Any]) -> bool:
        """Store ``artifacts`` under ``key`` for ``ttl``, exactly as given.

        Args:
            key: the build cache key (text of 1 to 1024 characters).
            artifacts: the manifest: a JSON object (a mapping with string keys), by the
                same rules as ``Build.artifacts``.

        Returns:
            True if stored, False if skipped because Redis is unavailable.

        Raises:
            ValidationError: a bad ``key``, or ``artifacts`` not a JSON object (a list,
                say), too deep, too large or holding NUL characters; nothing is stored.
        """
        full = self._cache.key(key)
        if not isinstance(artifacts, Mapping):
            raise ValidationError(
                f"artifacts must be a JSON object (a mapping), not {type(artifacts).__name__}",
                field="artifacts",
            )
        return await self._cache._store(full, encode_json("artifacts", artifacts), self._ttl_ms)

    async def invalidate(self, key: str) -> bool:
        """Forget ``key``'s manifest. Returns True once Redis confirms it is gone, False
        if Redis was unavailable (retry later if a stale manifest matters).

        Raises:
            ValidationError: ``key`` is not text of 1 to 1024 characters.
        """
        return await self._cache.invalidate(key)
