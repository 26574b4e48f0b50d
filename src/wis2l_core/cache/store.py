"""A generic namespaced cache over Redis: ``get``, ``set(ttl=)``, ``delete``, ``exists``.

Values go through the package converter (:mod:`wis2l_core.serde`): anything it can
unstructure (JSON values, attrs models, lists of them) is stored as JSON, and read back
as plain JSON, or typed when ``get`` is given ``type=``. Every call goes through the
client's one guard (:meth:`RedisClient.call`) and fails open: when Redis is down or slow,
reads are misses, writes and deletes are skipped. Keys and values are checked first
(:mod:`wis2l_core.cache._input`): bad input is a ``ValidationError`` and costs no I/O.
"""

from __future__ import annotations

import builtins
import logging
import re
from datetime import timedelta
from typing import Any, TypeVar, overload

import attrs
from redis.asyncio import Redis

from wis2l_core import serde
from wis2l_core.cache._input import encode_json, key_text
from wis2l_core.cache.client import RedisClient
from wis2l_core.errors import ValidationError

__all__ = ["RESERVED_SERVICES", "Cache", "decode", "ttl_ms"]

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


RESERVED_SERVICES = frozenset({"build", "ratelimit", "session", "tokens"})
"""The services of the built-in caches: a generic :class:`Cache` cannot use them, so no
key of yours can reach a session, a token cache lock or a rate limit."""

_SERVICE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@attrs.define(eq=False)
class Cache:
    """A key-value cache in one service's namespace: keys are ``<namespace>:<service>:<key>``.

    Args:
        client: the shared :class:`RedisClient`.
        service: the middle part of every key, e.g. ``"profile"``: 1 to 64 ASCII letters,
            digits, ``_``, ``.`` or ``-``, and not one of the built-in caches' services
            (``build``, ``ratelimit``, ``session``, ``tokens``).
        ttl: the default time to live (seconds or a ``timedelta``) of :meth:`set`;
            None keeps values until they are deleted or evicted.

    Keys are text of 1 to 1024 characters; in the Redis key, characters other than ASCII
    letters, digits and ``-._~:/@+=,!$&'()`` are percent-encoded (see :meth:`key`).
    A stored ``None`` reads back as a miss.

    Raises:
        ValidationError: a bad ``service`` or ``ttl``.
    """

    _client: RedisClient
    service: str
    ttl: float | timedelta | None = attrs.field(default=None, kw_only=True)
    _prefix: str = attrs.field(init=False, repr=False)
    _ttl_ms: int | None = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._check_service()
        self._prefix = self._client.key(self.service, "")
        self._ttl_ms = None if self.ttl is None else ttl_ms(self.ttl)

    def _check_service(self) -> None:
        if not isinstance(self.service, str) or not _SERVICE.fullmatch(self.service):
            raise ValidationError(
                "service must be 1 to 64 ASCII letters, digits, '_', '.' or '-'",
                field="service",
            )
        if self.service in RESERVED_SERVICES:
            raise ValidationError(
                f"service {self.service!r} belongs to a built-in cache", field="service"
            )

    def key(self, key: str) -> str:
        """The full Redis key that holds ``key``: ``<namespace>:<service>:<key>``, with
        ``key`` percent-encoded as described above (unchanged for plain keys).

        Raises:
            ValidationError: ``key`` is not text of 1 to 1024 characters.
        """
        return self._prefix + key_text("key", key)

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

        Raises:
            ValidationError: ``key`` is not text of 1 to 1024 characters.
        """
        full = self._prefix + key_text("key", key)
        raw = await self._client.call("get", None, Redis.get, full)
        if raw is None:
            return None
        return decode(raw, type, key=full)

    async def set(self, key: str, value: Any, *, ttl: float | timedelta | None = None) -> bool:
        """Store ``value`` under ``key``, replacing any value there.

        Args:
            key: the key inside this service.
            value: JSON data, or anything :mod:`wis2l_core.serde` turns into it (models,
                UUIDs, datetimes, enums); at most 255 levels deep and 16 MiB, finite
                numbers, string keys, no NUL characters.
            ttl: time to live (seconds or ``timedelta``); default: the cache's ``ttl``.

        Returns:
            True if Redis stored it, False if the write was skipped (Redis unavailable).

        Raises:
            ValidationError: a bad ``key``, ``ttl`` not positive, or ``value`` not storable
                as JSON (``field`` names which); nothing is written then.
        """
        full = self._prefix + key_text("key", key)
        px = self._ttl_ms if ttl is None else ttl_ms(ttl)
        return await self._store(full, encode_json("value", value), px)

    async def _store(self, full_key: str, payload: bytes, px: int | None) -> bool:
        return bool(await self._client.call("set", False, Redis.set, full_key, payload, px=px))

    async def delete(self, key: str) -> bool:
        """Delete ``key``. Returns True if a value was deleted; False if there was none or
        Redis was unavailable (the delete was skipped).

        Raises:
            ValidationError: ``key`` is not text of 1 to 1024 characters.
        """
        return bool(await self._delete(key))

    async def invalidate(self, key: str) -> bool:
        """Delete ``key``. Returns True once Redis confirms it is gone (deleted, or there
        was nothing), False if Redis was unavailable and the delete was skipped: a caller
        that must not serve stale data can retry then (an event handler, say).

        Raises:
            ValidationError: ``key`` is not text of 1 to 1024 characters.
        """
        return await self._delete(key) is not None

    async def _delete(self, key: str) -> int | None:
        full = self._prefix + key_text("key", key)
        deleted: int | None = await self._client.call("delete", None, Redis.delete, full)
        return deleted

    async def exists(self, key: str) -> bool:
        """True if ``key`` holds a value; False if not or Redis is unavailable.

        Raises:
            ValidationError: ``key`` is not text of 1 to 1024 characters.
        """
        full = self._prefix + key_text("key", key)
        return bool(await self._client.call("exists", 0, Redis.exists, full))
