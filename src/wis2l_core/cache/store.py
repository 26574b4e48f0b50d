"""A generic namespaced cache over Redis: ``get``, ``set(ttl=)``, ``delete``, ``exists``.

Values go through the package converter (:mod:`wis2l_core.serde`): anything it can
unstructure (JSON values, attrs models, lists of them) is stored as JSON, and read back
as plain JSON, or typed when ``get`` is given ``type=``. Every call fails open: when
Redis is down or slow, reads are misses, writes and deletes are skipped.
"""

from __future__ import annotations

import builtins
import logging
from datetime import timedelta
from typing import Any, TypeVar, overload

import attrs

from wis2l_core import serde
from wis2l_core.cache.client import REDIS_ERRORS, RedisClient
from wis2l_core.errors import ValidationError

__all__ = ["Cache", "decode", "ttl_ms"]

T = TypeVar("T")

logger = logging.getLogger("wis2l_core.cache")


def ttl_ms(ttl: float | timedelta, *, field: str = "ttl") -> int:
    """A TTL in whole milliseconds (at least 1).

    Raises:
        ValidationError: ``ttl`` is not a positive duration.
    """
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else ttl
    if not seconds > 0 or seconds == float("inf"):
        raise ValidationError(f"{field} must be a positive number of seconds", field=field)
    return max(1, round(seconds * 1000))


def decode(
    raw: bytes | str, type: builtins.type[T] | None, *, key: str, default: Any = None
) -> T | Any:
    """Parse a cached value, typed when ``type`` is given.

    A value that does not parse or fit ``type`` is logged and read as a miss: ``default``
    is returned, so a schema change or a corrupt entry never fails the caller.
    """
    try:
        data = serde.loads(raw)
        return data if type is None else serde.structure(data, type)
    except Exception as exc:  # a bad cache entry is a miss, never an error
        logger.warning("unreadable cache value at %s: %r", key, exc, extra={"key": key})
        return default


@attrs.define(eq=False)
class Cache:
    """A key-value cache in one service's namespace: keys are ``<namespace>:<service>:<key>``.

    Args:
        client: the shared :class:`RedisClient`.
        service: the middle part of every key, e.g. ``"build"``.
        ttl: the default time to live (seconds or a ``timedelta``) of :meth:`set`;
            None keeps values until they are deleted or evicted.

    A stored ``None`` reads back as a miss.
    """

    _client: RedisClient
    service: str
    ttl: float | timedelta | None = attrs.field(default=None, kw_only=True)
    _prefix: str = attrs.field(init=False, repr=False)
    _ttl_ms: int | None = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if not self.service or ":" in self.service:
            raise ValidationError("service must be non-empty without ':'", field="service")
        self._prefix = self._client.key(self.service, "")
        self._ttl_ms = None if self.ttl is None else ttl_ms(self.ttl)

    def key(self, key: str) -> str:
        """The full Redis key that holds ``key``."""
        return self._prefix + key

    @overload
    async def get(self, key: str) -> Any: ...
    @overload
    async def get(self, key: str, type: builtins.type[T]) -> T | None: ...

    async def get(self, key: str, type: builtins.type[Any] | None = None) -> Any:
        """Read ``key``.

        Args:
            key: the key inside this service.
            type: what to build from the stored JSON, e.g. ``list[DesignToken]``; without
                it the plain JSON value is returned.

        Returns:
            The value, or None on a miss, an expired key, an unreadable value or Redis
            being unavailable.
        """
        client = self._client
        redis = client.guard()
        if redis is None:
            return None
        try:
            raw = await redis.get(self._prefix + key)
        except REDIS_ERRORS as exc:
            client.report_failure(exc, op="get")
            return None
        if client.degraded:
            client.report_success()
        if raw is None:
            return None
        return decode(raw, type, key=self._prefix + key)

    async def set(self, key: str, value: Any, *, ttl: float | timedelta | None = None) -> bool:
        """Store ``value`` under ``key``, replacing any value there.

        Args:
            key: the key inside this service.
            value: anything :func:`wis2l_core.serde.dumps` accepts.
            ttl: time to live (seconds or ``timedelta``); default: the cache's ``ttl``.

        Returns:
            True if Redis stored it, False if the write was skipped (Redis unavailable).

        Raises:
            ValidationError: ``ttl`` is not positive.
            TypeError: ``value`` cannot be serialized.
        """
        px = self._ttl_ms if ttl is None else ttl_ms(ttl)
        payload = serde.dumps(value)
        client = self._client
        redis = client.guard()
        if redis is None:
            return False
        try:
            await redis.set(self._prefix + key, payload, px=px)
        except REDIS_ERRORS as exc:
            client.report_failure(exc, op="set")
            return False
        if client.degraded:
            client.report_success()
        return True

    async def delete(self, key: str) -> bool:
        """Delete ``key``. Returns True if a value was deleted; False if there was none or
        Redis was unavailable (the delete was skipped)."""
        return bool(await self._delete(key))

    async def invalidate(self, key: str) -> bool:
        """Delete ``key``. Returns True once Redis confirms it is gone (deleted, or there
        was nothing), False if Redis was unavailable and the delete was skipped: a caller
        that must not serve stale data can retry then (an event handler, say)."""
        return await self._delete(key) is not None

    async def _delete(self, key: str) -> int | None:
        client = self._client
        redis = client.guard()
        if redis is None:
            return None
        try:
            deleted: int = await redis.delete(self._prefix + key)
        except REDIS_ERRORS as exc:
            client.report_failure(exc, op="delete")
            return None
        if client.degraded:
            client.report_success()
        return deleted

    async def exists(self, key: str) -> bool:
        """True if ``key`` holds a value; False if not or Redis is unavailable."""
        client = self._client
        redis = client.guard()
        if redis is None:
            return False
        try:
            found = await redis.exists(self._prefix + key)
        except REDIS_ERRORS as exc:
            client.report_failure(exc, op="exists")
            return False
        if client.degraded:
            client.report_success()
        return bool(found)
