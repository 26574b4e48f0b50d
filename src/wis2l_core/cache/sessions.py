"""Sign-in sessions in Redis (24 h, sliding): ``SessionStore``.

A session token is 256 random bits (:func:`secrets.token_urlsafe`). Redis holds only its
SHA-256, so a dump of Redis gives no usable token. Each session is a hash
``<namespace>:session:<sha256>`` (``user_id``, ``data``, ``expires_at``), and each user
has a set ``<namespace>:session:user:<user_id>`` of their session hashes for
:meth:`SessionStore.revoke_all`. Every change is one Lua script, so it is atomic.

Unlike the caches, sessions do not fail open: when Redis cannot be asked, a session
cannot be checked, so the call raises :class:`~wis2l_core.errors.ServiceUnavailable`.
"""

from __future__ import annotations

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

_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")
"""What :func:`secrets.token_urlsafe` (32) returns."""

_CREATE = LuaScript("""
redis.call('HSET', KEYS[1], 'user_id', ARGV[1], 'data', ARGV[2], 'expires_at', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
for _, d in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if redis.call('EXISTS', ARGV[6] .. d) == 0 then redis.call('SREM', KEYS[2], d) end
end
redis.call('SADD', KEYS[2], ARGV[5])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[4]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
return 1
""")
"""KEYS: session, user set. ARGV: user_id, data, expires_at ms, ttl ms, digest, session
prefix. Also drops the user's expired sessions from the set, so it stays small."""

_REFRESH = LuaScript("""
local uid = redis.call('HGET', KEYS[1], 'user_id')
if not uid then return false end
redis.call('HSET', KEYS[1], 'expires_at', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local users = ARGV[3] .. uid
if redis.call('PTTL', users) < tonumber(ARGV[2]) then redis.call('PEXPIRE', users, ARGV[2]) end
return redis.call('HMGET', KEYS[1], 'user_id', 'data', 'expires_at')
""")
"""KEYS: session. ARGV: expires_at ms, ttl ms, user-set prefix."""

_REVOKE = LuaScript("""
local uid = redis.call('HGET', KEYS[1], 'user_id')
if not uid then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', ARGV[1] .. uid, ARGV[2])
return 1
""")
"""KEYS: session. ARGV: user-set prefix, digest."""

_REVOKE_ALL = LuaScript("""
local n = 0
for _, d in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  n = n + redis.call('DEL', ARGV[1] .. d)
end
redis.call('DEL', KEYS[1])
return n
""")
"""KEYS: user set. ARGV: session prefix."""


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
        token = secrets.token_urlsafe(32)
        digest = _digest(token)
        expires_ms = int(time.time() * 1000) + self._ttl_ms
        client = self._client
        await client.call_strict(
            "session create",
            _CREATE,
            (client.key(SERVICE, digest), client.key(SERVICE, f"user:{uid}")),
            (uid, payload, expires_ms, self._ttl_ms, digest, client.key(SERVICE, "")),
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
        client = self._client
        fields = await client.call_strict(
            "session get",
            Redis.hmget,
            client.key(SERVICE, _digest(token)),
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
        client = self._client
        expires_ms = int(time.time() * 1000) + self._ttl_ms
        fields = await client.call_strict(
            "session refresh",
            _REFRESH,
            (client.key(SERVICE, _digest(token)),),
            (expires_ms, self._ttl_ms, client.key(SERVICE, "user:")),
        )
        return _session(token, fields) if fields else None

    async def revoke(self, token: str) -> bool:
        """End one session. Returns True if it existed (False for a malformed token).

        Raises:
            ServiceUnavailable: Redis cannot be reached.
        """
        if not _well_formed(token):
            return False
        client = self._client
        digest = _digest(token)
        revoked = await client.call_strict(
            "session revoke",
            _REVOKE,
            (client.key(SERVICE, digest),),
            (client.key(SERVICE, "user:"), digest),
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
        count = await client.call_strict(
            "session revoke_all",
            _REVOKE_ALL,
            (client.key(SERVICE, f"user:{uid}"),),
            (client.key(SERVICE, ""),),
        )
        return int(count)


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
