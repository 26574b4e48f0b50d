"""``RateLimitMiddleware``: the Redis GCRA limiter once per request (pure ASGI).

It sends the IETF ``RateLimit-Policy`` / ``RateLimit`` fields
(draft-ietf-httpapi-ratelimit-headers-11) on every response it counts, and 429 with an
``application/problem+json`` body over the limit. Put it inside
:class:`~wis2l_core.asgi.AuthMiddleware` to count per user, outside to count per address.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import re
import warnings
from collections.abc import Iterable
from datetime import timedelta
from typing import Literal, Protocol

from wis2l_core.asgi._http import (
    CONNECTIONS,
    RATELIMIT_HEADERS,
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    header_values,
    path_matcher,
    respond_problem,
)
from wis2l_core.auth.principal import Principal
from wis2l_core.cache.client import RedisClient
from wis2l_core.cache.ratelimit import RateLimiter
from wis2l_core.errors import ConfigError, ServiceUnavailable, ValidationError
from wis2l_core.telemetry._cache import record_decision

__all__ = ["RateLimitMiddleware"]

log = logging.getLogger("wis2l_core.auth")

_STARTS = frozenset({"http.response.start", "websocket.http.response.start"})
_OLD_WORDS: dict[str, Literal["open", "closed"]] = {"allow": "open", "refuse": "closed"}


class _Runtime(Protocol):
    """What the middleware needs from ``Wis2l``."""

    @property
    def redis(self) -> RedisClient: ...


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class RateLimitMiddleware:
    """Limits requests per caller with the Redis GCRA limiter (pure ASGI).

    The caller is the authenticated user (``scope["user"]``, so put this middleware
    inside :class:`AuthMiddleware`), else the client address: the connection's peer, or,
    when the peer is a trusted proxy, the ``X-Forwarded-For`` entry read from the right,
    skipping trusted proxies. IPv6 clients are counted per /64. Each request is one
    script call in Redis (one round trip). Over the limit: 429 with ``Retry-After`` and an
    ``application/problem+json`` body. Every response carries
    ``RateLimit-Policy: "<policy>";q=<limit>;w=<per>`` and
    ``RateLimit: "<policy>";r=<remaining>;t=<seconds until full>``.

    Redis down: with ``fail_mode="open"`` (the default) requests go through without a
    ``RateLimit`` field and the outage is logged once; with ``"closed"`` they get 503
    (the words of :class:`~wis2l_core.cache.RateLimiter`'s ``fail_mode``).

    Args:
        app: the ASGI app to limit.
        wis: the runtime (its Redis client is used).
        limit: requests allowed in a burst, and per ``per`` on average.
        per: the window, in seconds or as a ``timedelta``.
        trusted_proxies: addresses or networks (``"10.0.0.0/8"``) of reverse proxies whose
            ``X-Forwarded-For`` is believed.
        policy: the quota policy's name in the headers (and in the Redis key).
        exempt_paths: paths (and what is below them) not counted, e.g. health probes.
        fail_mode: ``"open"`` or ``"closed"``, when Redis is down.
        on_redis_down: deprecated, the former name of ``fail_mode``: ``"allow"`` is
            ``"open"``, ``"refuse"`` is ``"closed"`` (a ``DeprecationWarning``).

    Raises:
        ValidationError: ``limit`` or ``per`` refused by
            :meth:`~wis2l_core.cache.RateLimiter.check` (``limit`` < 1, ``per`` not
            positive), or more than a million requests per second.
        ConfigError: a trusted proxy that is not an address or network, a policy name
            that is not a plain token, an unknown ``fail_mode`` or ``on_redis_down``, or
            both given.
    """

    def __init__(
        self,
        app: ASGIApp,
        wis: _Runtime,
        *,
        limit: int,
        per: float | timedelta,
        trusted_proxies: Iterable[str] = (),
        policy: str = "default",
        exempt_paths: Iterable[str] = (),
        fail_mode: Literal["open", "closed"] = "open",
        on_redis_down: Literal["allow", "refuse"] | None = None,
    ) -> None:
        seconds = float(RateLimiter.check(limit, per))
        if seconds / limit < 1e-6:  # the middleware's own rule (RateLimiter takes it)
            raise ValidationError("limit must be at most a million per second", field="limit")
        if not re.fullmatch(r"[a-z][a-z0-9_\-.]{0,63}", policy):
            raise ConfigError(f"policy {policy!r} must be a lower-case token")
        if on_redis_down is not None:
            fail_mode = _deprecated_fail_mode(on_redis_down, fail_mode)
        if fail_mode not in ("open", "closed"):
            raise ConfigError("fail_mode must be 'open' or 'closed'")
        try:
            self._proxies: tuple[Network, ...] = tuple(
                ipaddress.ip_network(p, strict=False) for p in trusted_proxies
            )
        except ValueError as exc:
            raise ConfigError(f"trusted_proxies: {exc}") from exc
        self.app = app
        self.limit = limit
        self.per = seconds
        self.policy = policy
        self.fail_mode = fail_mode
        self._limiter = RateLimiter(wis.redis, fail_mode="raise", policy=policy)
        self._exempt = path_matcher(exempt_paths)
        self._policy_header = (
            b"ratelimit-policy",
            f'"{policy}";q={limit};w={math.ceil(seconds)}'.encode(),
        )
        self._down_logged = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection; ``lifespan`` and exempt paths pass through."""
        kind = scope["type"]
        if (kind not in CONNECTIONS) or self._exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        try:
            hit = await self._limiter.hit(
                f"{self.policy}:{self._caller(scope)}", limit=self.limit, per=self.per
            )
        except ServiceUnavailable as exc:
            if not self._down_logged:
                self._down_logged = True
                verb = "letting requests through" if self.fail_mode == "open" else "503"
                log.warning("rate limit unavailable (%s): %s", verb, exc)
            record_decision(self.policy, allowed=self.fail_mode == "open", fail_mode=self.fail_mode)
            if self.fail_mode == "closed":
                detail = "rate limit cannot be checked right now"
                headers = [self._policy_header, (b"retry-after", b"1")]
                await respond_problem(scope, receive, send, 503, detail, headers)
                return
            scope[RATELIMIT_HEADERS] = [self._policy_header]
            await self.app(scope, receive, self._with_headers(send, [self._policy_header]))
            return
        if self._down_logged:
            self._down_logged = False
            log.info("rate limit available again")
        headers = [
            self._policy_header,
            (
                b"ratelimit",
                f'"{self.policy}";r={hit.remaining};t={math.ceil(hit.reset_after)}'.encode(),
            ),
        ]
        scope[RATELIMIT_HEADERS] = headers
        if not hit.allowed:
            retry = max(1, math.ceil(hit.retry_after))
            headers.append((b"retry-after", str(retry).encode()))
            detail = f"rate limit of {self.limit} per {self.per:g} s exceeded; retry in {retry} s"
            await respond_problem(scope, receive, send, 429, detail, headers)
            return
        await self.app(scope, receive, self._with_headers(send, headers))

    def _caller(self, scope: Scope) -> str:
        user = scope.get("user")
        if isinstance(user, Principal):
            return f"user:{user.user.id}"
        return f"ip:{self._client_address(scope)}"

    def _client_address(self, scope: Scope) -> str:
        client = scope.get("client")
        if not client:
            return "unknown"
        try:
            address = ipaddress.ip_address(client[0])
        except ValueError:
            return "unknown"
        if self._proxies and self._trusted(address):
            forwarded = b",".join(header_values(scope, b"x-forwarded-for")).decode("latin-1")
            for entry in reversed(forwarded.split(",")):
                try:
                    address = ipaddress.ip_address(entry.strip())
                except ValueError:
                    break  # garbage: the last proxy that appended it is the client
                if not self._trusted(address):
                    break
        if isinstance(address, ipaddress.IPv6Address):
            if address.ipv4_mapped is not None:
                return str(address.ipv4_mapped)
            return str(ipaddress.IPv6Network((address, 64), strict=False))
        return str(address)

    def _trusted(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in network for network in self._proxies)

    @staticmethod
    def _with_headers(send: Send, headers: list[tuple[bytes, bytes]]) -> Send:
        async def send_with_headers(message: Message) -> None:
            kind = message["type"]
            if kind in _STARTS:
                message["headers"] = [*message.get("headers", ()), *headers]
            await send(message)

        return send_with_headers


def _deprecated_fail_mode(on_redis_down: str, fail_mode: str) -> Literal["open", "closed"]:
    """The ``fail_mode`` an ``on_redis_down=`` word means, with a ``DeprecationWarning``."""
    warnings.warn(
        'RateLimitMiddleware(on_redis_down=...) is deprecated: use fail_mode="open" '
        '(was "allow") or fail_mode="closed" (was "refuse")',
        DeprecationWarning,
        stacklevel=3,
    )
    if on_redis_down not in _OLD_WORDS:
        raise ConfigError("on_redis_down must be 'allow' or 'refuse'")
    if fail_mode != "open":
        raise ConfigError("give fail_mode or on_redis_down, not both")
    return _OLD_WORDS[on_redis_down]
