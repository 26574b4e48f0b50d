"""Sign-in sessions in Redis (24 h, sliding): ``SessionStore``.

A session token is ``<tag>.<secret>``: the secret is 256 random bits
(:func:`secrets.token_urlsafe`), the tag 16 characters derived from the user id (a hash,
the same for all of a user's sessions; it names a Redis Cluster slot and reveals no id).
Redis holds only the token's SHA-256, so a dump of Redis gives no usable token.

Keys share the tag as a hash tag, so one user's keys live in one cluster slot and every
script names all its keys in ``KEYS``:

- ``<namespace>:session:{<tag>}:<sha256>``: a hash (``user_id``, ``data``, ``expires_at``);
- ``<namespace>:session:{<tag>}:index``: a sorted set of the tag's session hashes, scored
  by expiry (ms), for :meth:`SessionStore.revoke_all`; expired members are dropped when a
  session is created.

Every change is one Lua script, so it is atomic. Tokens made before this layout (43 characters,
no tag) are not well formed any more: their holders sign in again.

Unlike the caches, sessions do not fail open: when Redis cannot be asked, a session
cannot be checked, so the call raises :class:`~wis2l_core.errors.ServiceUnavailable`.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import attrs
import orjson
from redis.asyncio import Redis

from wis2l_core import serde
from wis2l_core.cache._input import encode_json, uuid_text
from wis2l_core.cache.client import LuaScript, RedisClient
from wis2l_core.cache.store import ttl_ms
from wis2l_core.errors import ValidationError

__all__ = ["MAX_DATA_BYTES", "Session", "SessionStore"]

logger = logging.getLogger("wis2l_core.cache")

SERVICE = "session"

MAX_DATA_BYTES = 64 * 1024
"""The most session ``data`` may hold, as JSON: it is read on every request."""

_TOKEN = re.compile(r"([A-Za-z0-9_-]{16})\.[A-Za-z0-9_-]{43}")
"""``<tag>.<secret>``: the tag (12 bytes, URL-safe base64) and
:func:`secrets.token_urlsafe` (32)."""

_REVOKE_ALL_TRIES = 5


def _found(reply: Any) -> bool:
    """A refresh found the session (its telemetry's ``wis2l.cache.hit``)."""
    return reply is not None


_CREATE = LuaScript(
    """
redis.call('HSET', KEYS[1], 'user_id', ARGV[1], 'data', ARGV[2], 'expires_at', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[6])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[5])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[4]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
return 1
""",
    name="session.create",
)
"""KEYS: session, index. ARGV: user_id, data, expires_at ms, ttl ms, digest, now ms.
Also drops expired sessions from the index, so it stays small."""

_REFRESH = LuaScript(
    """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HSET', KEYS[1], 'expires_at', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[3])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return redis.call('HMGET', KEYS[1], 'user_id', 'data', 'expires_at')
""",
    name="session.refresh",
    hit=_found,
)
"""KEYS: session, index. ARGV: expires_at ms, ttl ms, digest."""

_REVOKE = LuaScript(
    """
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('DEL', KEYS[1])
""",
    name="session.revoke",
)
"""KEYS: session, index. ARGV: digest."""

_REVOKE_ALL = LuaScript(
    """
local n = 0
for i = 2, #KEYS do
  if redis.call('HGET', KEYS[i], 'user_id') == ARGV[1] then
    n = n + redis.call('DEL', KEYS[i])
    redis.call('ZREM', KEYS[1], ARGV[i + 1])
  end
end
for _, d in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[2], '+inf')) do
  local known = false
  for i = 3, #ARGV do if ARGV[i] == d then known = true end end
  if not known then return {-1, n} end
end
return {0, n}
""",
    name="session.revoke_all",
)
"""KEYS: index, then the sessions listed. ARGV: user_id, now ms, then their digests.
Deletes those of the user; returns ``{-1, n}`` when the index gained a session since it
was listed (the caller lists again), else ``{0, n}``. ``ARGV[i + 1]`` is ``KEYS[i]``'s digest."""


@attrs.frozen
class Session:
    """A signed-in user's session.

    Attributes:
        token: the secret the client presents (a cookie or bearer value); never logged
            or shown in ``repr()``, and never stored in Redis.
        user_id: the user it belongs to.
        data: what the app stored with it (JSON data).
        expires_at: when it ends unless refreshed (UTC).
    """

    token: str = attrs.field(repr=False)
    user_id: UUID
    data: Mapping[str, Any]
    expires_at: datetime


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _tag(user_id: str) -> str:
    """The user's hash tag: 16 URL-safe characters (96 bits of a SHA-256 of the id)."""
    raw = hashlib.sha256(f"wis2l-session:{user_id}".encode()).digest()[:12]
    return base64.urlsafe_b64encode(raw).decode()


def _keys(client: RedisClient, tag: str, digest: str) -> tuple[str, str]:
    """A session's hash and its tag's index: one hash tag, so one cluster slot."""
    prefix = client.key(SERVICE, f"{{{tag}}}")
    return f"{prefix}:{digest}", f"{prefix}:index"


@attrs.define(eq=False)
class SessionStore:
    """Creates, checks, extends and revokes sessions.

    Args:
        client: the shared :class:`RedisClient`.
        ttl: how long a session lives after it is created or refreshed (default 24 h).
    """

    _client: RedisClient
    ttl: timedelta = attrs.field(default=timedelta(hours=24), kw_only=True)
    _ttl_ms: int = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._ttl_ms = ttl_ms(self.ttl)

    async def create(self, user_id: UUID, data: Mapping[str, Any] | None = None) -> Session:
        """Start a session for ``user_id``.

        Args:
            user_id: the signed-in user (a ``UUID``, or a string that parses as one).
            data: JSON data to keep with the session (roles, a CSRF secret, ...): a
                mapping with string keys, at most 64 KiB as JSON, by the repositories'
                JSON rules (finite numbers, no NUL characters, at most 255 levels deep).

        Returns:
            The session; its ``token`` is the only copy of the secret.

        Raises:
            ValidationError: ``user_id`` is not a UUID, or ``data`` is not such a mapping
                (``field`` names which); nothing is stored then.
            ServiceUnavailable: Redis cannot be reached.
        """
        uid = uuid_text("user_id", user_id)
        if data is None:
            data = {}
        elif not isinstance(data, Mapping):
            raise ValidationError(
                f"data must be a JSON object (a mapping), not {type(data).__name__}",
                field="data",
            )
        payload = encode_json("data", data, max_bytes=MAX_DATA_BYTES)
        tag = _tag(uid)
        token = f"{tag}.{secrets.token_urlsafe(32)}"
        digest = _digest(token)
        now_ms = int(time.time() * 1000)
        expires_ms = now_ms + self._ttl_ms
        await self._client.call_strict(
            "session create",
            _CREATE,
            _keys(self._client, tag, digest),
            (uid, payload, expires_ms, self._ttl_ms, digest, now_ms),
        )
        return Session(token, UUID(uid), serde.loads(payload), _from_ms(expires_ms))

    async def get(self, token: str) -> Session | None:
        """The session of ``token``, or None if it is unknown, expired or revoked.

        A token that cannot be one of ours (not 43 URL-safe characters: a tampered
        cookie, say) is None at once, without asking Redis.

        Raises:
            ServiceUnavailable: Redis cannot be reached (the session cannot be checked).
        """
        if not _well_formed(token):
            return None
        fields = await self._client.call_strict(
            "session get",
            Redis.hmget,
            _keys(self._client, token[:16], _digest(token))[0],
            ["user_id", "data", "expires_at"],
        )
        return _session(token, fields)

    async def refresh(self, token: str) -> Session | None:
        """Extend the session by ``ttl`` from now (sliding expiry).

        Returns:
            The session with its new ``expires_at``, or None if it is unknown, expired,
            revoked or not a well-formed token.

        Raises:
            ServiceUnavailable: Redis cannot be reached.
        """
        if not _well_formed(token):
            return None
        digest = _digest(token)
        expires_ms = int(time.time() * 1000) + self._ttl_ms
        fields = await self._client.call_strict(
            "session refresh",
            _REFRESH,
            _keys(self._client, token[:16], digest),
            (expires_ms, self._ttl_ms, digest),
        )
        return _session(token, fields) if fields else None

    async def revoke(self, token: str) -> bool:
        """End one session. Returns True if it existed (False for a malformed token).

        Raises:
            ServiceUnavailable: Redis cannot be reached.
        """
        if not _well_formed(token):
            return False
        digest = _digest(token)
        revoked = await self._client.call_strict(
            "session revoke", _REVOKE, _keys(self._client, token[:16], digest), (digest,)
        )
        return bool(revoked)

    async def revoke_all(self, user_id: UUID) -> int:
        """End every session of ``user_id`` (sign out everywhere). Returns how many.

        Raises:
            ValidationError: ``user_id`` is not a UUID.
            ServiceUnavailable: Redis cannot be reached.
        """
        client = self._client
        uid = uuid_text("user_id", user_id)
        tag = _tag(uid)
        index = _keys(client, tag, "")[1]
        total = 0
        # Two steps (list, then delete what was listed), since a script names every key
        # it touches; the script reports a session created in between, and we go again.
        for _ in range(_REVOKE_ALL_TRIES):
            now_ms = int(time.time() * 1000)
            listed = await client.call_strict(
                "session revoke_all", Redis.zrangebyscore, index, now_ms, "+inf"
            )
            digests = [d.decode() if isinstance(d, bytes) else str(d) for d in listed]
            keys = [index, *(_keys(client, tag, d)[0] for d in digests)]
            again, count = await client.call_strict(
                "session revoke_all", _REVOKE_ALL, keys, (uid, now_ms, *digests)
            )
            total += int(count)
            if int(again) == 0:
                break
        return total


def _well_formed(token: object) -> bool:
    """Could ``token`` be one :meth:`SessionStore.create` made? (Untrusted input.)"""
    return isinstance(token, str) and _TOKEN.fullmatch(token) is not None


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _session(token: str, fields: Sequence[bytes | str | None]) -> Session | None:
    user_id, data, expires_at = fields
    if user_id is None or data is None or expires_at is None:
        return None
    try:
        uid = UUID(user_id.decode() if isinstance(user_id, bytes) else user_id)
        return Session(token, uid, serde.loads(data), _from_ms(int(expires_at)))
    except (ValueError, TypeError, orjson.JSONDecodeError) as exc:  # not ours: not a session
        logger.warning("unreadable session entry: %r", exc)
        return None
