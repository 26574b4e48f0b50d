"""Rate limiting in Redis: ``RateLimiter.hit(key, limit=, per=)``.

One Lua script runs the generic cell rate algorithm (GCRA): each key stores one number,
its "theoretical arrival time", and a hit is allowed while it stays within ``per`` of
now. That allows ``limit`` hits at once, then one every ``per / limit`` seconds, exactly,
however many processes hit the same key at once (the script is atomic and reads Redis'
clock, not the callers'). Keys are ``<namespace>:ratelimit:<key>`` (the caller's key
percent-encoded as in :meth:`~wis2l_core.cache.Cache.key`) and expire as soon as the
limit has fully recovered.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

import attrs

from wis2l_core._validate import check_int
from wis2l_core.cache._input import key_text
from wis2l_core.cache.client import LuaScript, RedisClient
from wis2l_core.errors import ValidationError
from wis2l_core.telemetry._cache import record_decision

__all__ = ["FailMode", "RateLimit", "RateLimiter"]

SERVICE = "ratelimit"
_MAX_LIMIT = 2**31 - 1

FailMode = Literal["open", "closed", "raise"]
"""What :meth:`RateLimiter.hit` does when Redis cannot be asked: ``"open"`` allows the
hit, ``"closed"`` refuses it, ``"raise"`` raises ``ServiceUnavailable``."""

_GCRA = LuaScript(
    """
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local interval = period / limit
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local stored = redis.call('GET', KEYS[1])
local tat = now
if stored then tat = math.max(tonumber(stored), now) end
local new_tat = tat + interval * cost
local wait = new_tat - period - now
if wait > 1e-6 then
  local remaining = math.floor((period - (tat - now)) / interval + 1e-9)
  return {0, remaining, tostring(wait), tostring(tat - now)}
end
local ttl = math.max(1, math.ceil(new_tat - now))
redis.call('SET', KEYS[1], string.format('%.17g', new_tat), 'PX', ttl)
local remaining = math.floor((period - (new_tat - now)) / interval + 1e-9)
return {1, remaining, '0', tostring(new_tat - now)}
""",
    name="ratelimit.gcra",
)
"""KEYS: the limit's key. ARGV: limit, period ms, cost. Returns allowed, remaining,
retry-after ms, reset-after ms (times as strings: Redis would truncate numbers)."""


@attrs.frozen
class RateLimit:
    """The outcome of one :meth:`RateLimiter.hit`.

    Attributes:
        allowed: whether the hit may go ahead.
        remaining: hits still allowed right now after this one.
        retry_after: seconds until a refused hit would be allowed (0 when allowed);
            suits a ``Retry-After`` header.
        limit: the limit that was applied.
        reset_after: seconds until the full ``limit`` is available again.
    """

    allowed: bool
    remaining: int
    retry_after: float
    limit: int
    reset_after: float


@attrs.define(eq=False)
class RateLimiter:
    """Counts hits per key against a limit, atomically in Redis.

    Args:
        client: the shared :class:`RedisClient`.
        fail_mode: what to do when Redis is unavailable: ``"open"`` (default) allows
            the hit, ``"closed"`` refuses it, ``"raise"`` raises ``ServiceUnavailable``.
        policy: the name its decisions are counted under in telemetry
            (``wis2l.ratelimit.policy`` of ``wis2l.ratelimit.decisions``); a
            :meth:`hit` may name its own.
    """

    _client: RedisClient
    fail_mode: FailMode = attrs.field(default="open", kw_only=True)
    policy: str = attrs.field(default="default", kw_only=True)

    @fail_mode.validator
    def _check_fail_mode(self, _: object, value: str) -> None:
        if value not in ("open", "closed", "raise"):
            raise ValidationError(
                "fail_mode must be 'open', 'closed' or 'raise'", field="fail_mode"
            )

    @staticmethod
    def check(limit: int, per: float | timedelta) -> float:
        """Check a ``limit`` and its period as :meth:`hit` does, before any hit.

        Returns:
            ``per`` in seconds.

        Raises:
            ValidationError: ``limit`` not an integer from 1 to 2**31 - 1, or ``per`` not
                a positive finite number of seconds.
        """
        check_int("limit", limit, low=1, high=_MAX_LIMIT)
        seconds = per.total_seconds() if isinstance(per, timedelta) else per
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not 0 < seconds < float("inf")
        ):
            raise ValidationError("per must be a positive number of seconds", field="per")
        return seconds

    async def hit(
        self,
        key: str,
        *,
        limit: int,
        per: float | timedelta,
        cost: int = 1,
        policy: str | None = None,
    ) -> RateLimit:
        """Count one hit (or ``cost`` hits) on ``key``: at most ``limit`` per ``per``.

        Args:
            key: what is limited, e.g. ``f"login:{ip}"`` or ``f"spark:{user_id}"``: any
                text of 1 to 1024 characters (encoded as in :meth:`Cache.key`, so it
                stays inside ``<namespace>:ratelimit:`` and holds no glob character).
            limit: hits allowed in a burst, and per ``per`` on average.
            per: the period, in seconds or as a ``timedelta``.
            cost: how many hits this one counts as.
            policy: the policy its decision is counted under in telemetry (default: the
                limiter's ``policy``); name a few fixed policies (``"login"``), never
                one per key.

        Returns:
            Whether it is allowed, what remains and when to retry.

        Raises:
            ValidationError: ``key`` not text of 1 to 1024 characters, ``limit`` or
                ``per`` refused by :meth:`check`, or ``cost`` not in ``1..limit``.
            ServiceUnavailable: Redis is unavailable and ``fail_mode`` is ``"raise"``.
        """
        period = self.check(limit, per) * 1000
        check_int("cost", cost, low=1, high=limit)
        client = self._client
        full = client.key(SERVICE, key_text("key", key))
        args = (limit, repr(period), cost)
        if self.fail_mode == "raise":
            reply = await client.call_strict("ratelimit", _GCRA, (full,), args)
        else:
            reply = await client.call("ratelimit", None, _GCRA, (full,), args)
            if reply is None:
                decided = self._unavailable(limit)
                record_decision(
                    policy or self.policy, allowed=decided.allowed, fail_mode=self.fail_mode
                )
                return decided
        allowed, remaining, wait, reset = reply
        record_decision(policy or self.policy, allowed=bool(allowed))
        return RateLimit(
            allowed=bool(allowed),
            remaining=max(0, int(remaining)),
            retry_after=float(wait) / 1000,
            limit=limit,
            reset_after=float(reset) / 1000,
        )

    def _unavailable(self, limit: int) -> RateLimit:
        if self.fail_mode == "closed":
            retry = self._client.breaker_seconds
            return RateLimit(
                allowed=False, remaining=0, retry_after=retry, limit=limit, reset_after=retry
            )
        return RateLimit(
            allowed=True, remaining=limit, retry_after=0.0, limit=limit, reset_after=0.0
        )
