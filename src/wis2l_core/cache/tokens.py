"""A project's design tokens, cached for an hour: ``TokenCache``.

``get_or_load(project_id, loader)`` returns the cached value or calls ``loader`` once,
however many callers miss at the same time: callers in one process share one load (an
in-process future), and processes share one load through a short Redis lock
(``SET NX PX`` with a random owner token, renewed while the loader runs). A process that
dies holding the lock stops renewing it, so it expires within ``lock_ttl`` and another
caller takes over.

``invalidate(project_id)`` deletes the value and bumps a generation counter; a load that
started before the invalidation does not store its (possibly stale) result.

Keys: ``<namespace>:tokens:{<project_id>}`` (the value), ``...:tokens:{<project_id>}:lock``
and ``...:tokens:{<project_id>}:gen``. The braces are a Redis Cluster hash tag: a
project's three keys share one slot, so each script reaches only keys of one slot, all
named in ``KEYS``. Like every cache it fails open: with Redis down the loader is called
(still once per process for concurrent misses) and nothing is stored.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import logging
import random
import secrets
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar, overload
from uuid import UUID

import attrs
from redis.asyncio import Redis

from wis2l_core import serde
from wis2l_core._backoff import Backoff
from wis2l_core.cache._input import encode_json, uuid_text
from wis2l_core.cache.client import LuaScript, RedisClient
from wis2l_core.cache.store import decode, ttl_ms
from wis2l_core.errors import ValidationError

__all__ = ["TokenCache"]

T = TypeVar("T")

logger = logging.getLogger("wis2l_core.cache")

SERVICE = "tokens"
_MISS: Any = object()


def _acquired_hit(reply: Any) -> bool:
    """The lock script found the value cached (its telemetry's ``wis2l.cache.hit``)."""
    return bool(reply) and reply[0] == b"hit"


_ACQUIRE = LuaScript(
    """
local v = redis.call('GET', KEYS[1])
if v then return {'hit', v} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {'lock', redis.call('GET', KEYS[3]) or ''}
end
return {'wait'}
""",
    name="tokens.acquire",
    hit=_acquired_hit,
)
"""KEYS: value, lock, generation. ARGV: owner token, lock ttl ms."""

_RENEW = LuaScript(
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
""",
    name="tokens.renew",
)
"""KEYS: lock. ARGV: owner token, lock ttl ms."""

_STORE = LuaScript(
    """
local stored = 0
if (redis.call('GET', KEYS[2]) or '') == ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  stored = 1
end
if redis.call('GET', KEYS[3]) == ARGV[4] then redis.call('DEL', KEYS[3]) end
return stored
""",
    name="tokens.store",
)
"""KEYS: value, generation, lock. ARGV: payload, ttl ms, generation read at lock time,
owner token. Stores only if no invalidation happened since; always releases the lock."""

_RELEASE = LuaScript(
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""",
    name="tokens.release",
)
"""KEYS: lock. ARGV: owner token."""

_INVALIDATE = LuaScript(
    """
redis.call('DEL', KEYS[1])
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 1
""",
    name="tokens.invalidate",
)
"""KEYS: value, generation. ARGV: generation ttl ms."""


def _keys(client: RedisClient, project: str) -> tuple[str, str, str]:
    """A project's value, lock and generation keys: one hash tag, so one cluster slot."""
    value = client.key(SERVICE, f"{{{project}}}")
    return value, f"{value}:lock", f"{value}:gen"


@attrs.frozen
class _Loaded:
    """One load's outcome, shared by the callers that waited on it."""

    value: Any = _MISS
    payload: bytes | None = None

    def result(self, type: builtins.type[Any] | None) -> Any:
        if type is not None and self.value is not _MISS:
            return self.value
        payload = serde.dumps(self.value) if self.payload is None else self.payload
        data = serde.loads(payload)
        return data if type is None else serde.structure(data, type)


@attrs.define(eq=False)
class TokenCache:
    """Design tokens by project, loaded once per expiry however many callers miss.

    Args:
        client: the shared :class:`RedisClient`.
        ttl: how long a loaded value is kept (default 1 h); each write draws its TTL
            from ``[ttl * (1 - jitter), ttl]`` so projects do not expire together.
        jitter: the fraction of ``ttl`` to spread expiries over (default 0.1).
        lock_ttl: how long the cross-process lock outlives a loader that stopped renewing
            it (a dead process), before another caller takes over (default 5 s).
        wait_timeout: how long a caller waits for another process's load before it calls
            its loader itself (default 10 s).
    """

    _client: RedisClient
    ttl: timedelta = attrs.field(default=timedelta(hours=1), kw_only=True)
    jitter: float = attrs.field(default=0.1, kw_only=True)
    lock_ttl: timedelta = attrs.field(default=timedelta(seconds=5), kw_only=True)
    wait_timeout: timedelta = attrs.field(default=timedelta(seconds=10), kw_only=True)
    _inflight: dict[str, asyncio.Future[_Loaded]] = attrs.field(
        factory=dict, init=False, repr=False
    )

    def __attrs_post_init__(self) -> None:
        ttl_ms(self.ttl)
        ttl_ms(self.lock_ttl, field="lock_ttl")
        if not 0 <= self.jitter < 1:
            raise ValidationError("jitter must be in [0, 1)", field="jitter")

    def key(self, project_id: UUID) -> str:
        """The full Redis key that holds ``project_id``'s cached value.

        Raises:
            ValidationError: ``project_id`` is not a UUID.
        """
        return _keys(self._client, uuid_text("project_id", project_id))[0]

    @overload
    async def get_or_load(
        self,
        project_id: UUID,
        loader: Callable[[], Awaitable[T]],
        *,
        type: builtins.type[T],
    ) -> T: ...
    @overload
    async def get_or_load(self, project_id: UUID, loader: Callable[[], Awaitable[Any]]) -> Any: ...

    async def get_or_load(
        self,
        project_id: UUID,
        loader: Callable[[], Awaitable[Any]],
        *,
        type: builtins.type[Any] | None = None,
    ) -> Any:
        """The cached value for ``project_id``, or ``loader()``'s result, cached.

        Args:
            project_id: the project whose tokens these are.
            loader: an async function with no arguments that loads the value from the
                database; it is called at most once for concurrent misses.
            type: the loader's return type, e.g. ``list[DesignToken]``. With it, a hit is
                built back into that type and a miss returns the loader's own result.
                Without it, hits and misses alike return plain JSON data.

        Returns:
            The value (treat it as read-only: concurrent callers may share it).

        Raises:
            Exception: whatever ``loader`` raises (nothing is cached then). Redis errors
                never propagate: the cache fails open.
        """
        key = uuid_text("project_id", project_id)
        client = self._client
        vkey = _keys(client, key)[0]
        fut = self._inflight.get(key)
        if fut is None:  # no load running here: try Redis first
            raw = await client.call("get", None, Redis.get, vkey)
            if raw is not None:
                value = decode(raw, type, key=vkey, default=_MISS)
                if value is not _MISS:
                    return value
                await client.call("delete", None, Redis.delete, vkey)
            fut = self._inflight.get(key)
            if fut is None:
                fut = asyncio.ensure_future(self._load(key, loader))
                self._inflight[key] = fut
                fut.add_done_callback(functools.partial(self._forget, key))
        loaded = await asyncio.shield(fut)
        try:
            return loaded.result(type)
        except Exception as exc:  # another process stored what this one cannot read
            logger.warning("unreadable cache value at %s: %r", vkey, exc, extra={"key": vkey})
            return await loader()

    async def invalidate(self, project_id: UUID) -> bool:
        """Forget ``project_id``'s value, and keep loads already running from storing
        theirs (they may have read the tokens before the change).

        Returns:
            True once Redis confirms, False if Redis was unavailable and it was skipped
            (an event handler can raise then, to have the event delivered again).
        """
        key = uuid_text("project_id", project_id)
        self._inflight.pop(key, None)
        client = self._client
        value_key, _, gen_key = _keys(client, key)
        keys = (value_key, gen_key)
        done = await client.call("invalidate", None, _INVALIDATE, keys, (2 * ttl_ms(self.ttl),))
        return done is not None

    def _forget(self, key: str, fut: asyncio.Future[_Loaded]) -> None:
        if self._inflight.get(key) is fut:
            del self._inflight[key]
        if not fut.cancelled():
            fut.exception()  # retrieved: a failed load is the callers' error, not a warning

    async def _load(self, key: str, loader: Callable[[], Awaitable[Any]]) -> _Loaded:
        client = self._client
        keys = _keys(client, key)
        owner = secrets.token_hex(16)
        lock_ms = ttl_ms(self.lock_ttl)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_timeout.total_seconds()
        backoff = Backoff.poll()
        while True:
            reply = await client.call("token lock", None, _ACQUIRE, keys, (owner, lock_ms))
            if reply is None:  # Redis unavailable: load here, store nothing
                return _Loaded(await loader())
            if reply[0] == b"hit":
                return _Loaded(payload=reply[1])
            if reply[0] == b"lock":
                return await self._load_locked(keys, owner, reply[1], loader)
            if loop.time() >= deadline:
                logger.warning(
                    "waited %.1f s for another process to load %s; loading here",
                    self.wait_timeout.total_seconds(),
                    keys[0],
                    extra={"key": keys[0]},
                )
                return _Loaded(await loader())
            await asyncio.sleep(backoff.next())

    async def _load_locked(
        self,
        keys: tuple[str, str, str],
        owner: str,
        generation: bytes,
        loader: Callable[[], Awaitable[Any]],
    ) -> _Loaded:
        value_key, lock_key, gen_key = keys
        client = self._client
        renewer = asyncio.create_task(self._renew(lock_key, owner))
        try:
            value = await loader()
            payload = encode_json("value", value)
        except BaseException:
            renewer.cancel()
            # Best effort: if this fails (or is cancelled) the lock lapses after lock_ttl.
            await client.call("token unlock", None, _RELEASE, (lock_key,), (owner,))
            raise
        finally:
            renewer.cancel()
        px = ttl_ms(self.ttl) * (1 - self.jitter * random.random())  # noqa: S311 - not crypto
        await client.call(
            "set",
            None,
            _STORE,
            (value_key, gen_key, lock_key),
            (payload, int(px), generation, owner),
        )
        return _Loaded(value, payload)

    async def _renew(self, lock_key: str, owner: str) -> None:
        lock_ms = ttl_ms(self.lock_ttl)
        while True:
            await asyncio.sleep(lock_ms / 3000)
            renewed = await self._client.call(
                "token lock renew", None, _RENEW, (lock_key,), (owner, lock_ms)
            )
            if not renewed:
                return  # lost or unreachable: the lock lapses; the load still completes
