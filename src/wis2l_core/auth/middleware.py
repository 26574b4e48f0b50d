"""Pure ASGI middleware: ``AuthMiddleware`` and ``RateLimitMiddleware``.

No framework is imported; both wrap any ASGI 3 app (Starlette, FastAPI, Litestar, a bare
callable). ``AuthMiddleware`` puts the caller in ``scope["user"]`` (a
:class:`~wis2l_core.auth.Principal`, or :class:`~wis2l_core.auth.access.Anonymous` on a
public path) and :class:`Credentials` in ``scope["auth"]``, which is where Starlette's and
Litestar's ``request.user`` and ``request.auth`` read them. Refusals follow RFC 6750 and
RFC 9457 (``application/problem+json`` bodies); WebSocket handshakes are refused before
``accept``. ``RateLimitMiddleware`` runs the Redis GCRA limiter once per request and
sends the IETF ``RateLimit-Policy`` / ``RateLimit`` fields (draft-ietf-httpapi-ratelimit-
headers-11) on every response.

With Starlette or FastAPI, add them with ``app.add_middleware(...)`` (the last added runs
first, so add ``RateLimitMiddleware`` before ``AuthMiddleware`` for per-user limits):
inside Starlette's error middleware, ``AuthMiddleware`` also turns a ``Forbidden`` or
``Unauthenticated`` that an endpoint raises into 403 / 401.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from datetime import timedelta
from typing import Any, Literal, Protocol

import attrs
import orjson

from wis2l_core._origin import same_origin
from wis2l_core.auth.access import Anonymous
from wis2l_core.auth.principal import Principal
from wis2l_core.cache.client import RedisClient
from wis2l_core.cache.ratelimit import RateLimiter
from wis2l_core.errors import (
    ConfigError,
    Forbidden,
    ServiceUnavailable,
    Unauthenticated,
    ValidationError,
)

__all__ = [
    "ANONYMOUS",
    "AuthMiddleware",
    "Credentials",
    "RateLimitMiddleware",
]

log = logging.getLogger("wis2l_core.auth")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ANONYMOUS = Anonymous()
"""``scope["user"]`` on a public path when no valid credentials came."""

_RATELIMIT_HEADERS = "wis2l.ratelimit_headers"
"""The scope key where ``RateLimitMiddleware`` leaves its fields, so that a refusal
``AuthMiddleware`` answers for the app (a ``Forbidden`` it raised) carries them too."""
_B64TOKEN = re.compile(rb"[A-Za-z0-9\-._~+/]+=*")
_CONNECTIONS = frozenset({"http", "websocket"})
_STARTS = frozenset({"http.response.start", "websocket.http.response.start"})
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    429: "Too Many Requests",
    503: "Service Unavailable",
}


class _IdentitySource(Protocol):
    @property
    def issuer(self) -> str: ...

    async def authenticate(self, token: str) -> Principal: ...

    async def from_session(self, token: str) -> Principal: ...


class _Runtime(Protocol):
    """What the middleware needs from ``Wis2l``."""

    @property
    def identity(self) -> _IdentitySource: ...

    @property
    def redis(self) -> RedisClient: ...


@attrs.frozen
class Credentials:
    """``scope["auth"]`` (``request.auth``): how the caller proved who they are.

    Attributes:
        scopes: the caller's permissions as strings (``"project:read"``...), so
            Starlette's ``@requires("build:create")`` works; empty when anonymous.
        scheme: ``"bearer"`` (an ``Authorization`` header), ``"session"`` (the session
            cookie) or ``None`` (anonymous).
    """

    scopes: frozenset[str]
    scheme: Literal["bearer", "session"] | None


_NO_CREDENTIALS = Credentials(scopes=frozenset(), scheme=None)


def _problem(status: int, detail: str) -> bytes:
    return orjson.dumps(
        {"type": "about:blank", "title": _TITLES[status], "status": status, "detail": detail}
    )


async def _respond(  # noqa: PLR0917 (scope, receive, send come first, as in ASGI)
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    detail: str,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Send a problem response; for a WebSocket, refuse the handshake without accepting."""
    body = _problem(status, detail)
    head = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *headers,
    ]
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": status, "headers": head})
        await send({"type": "http.response.body", "body": body})
        return
    message = await receive()  # websocket.connect: the server waits for our answer
    if message["type"] != "websocket.connect":
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": status, "headers": head})
        await send({"type": "websocket.http.response.body", "body": body})
    else:  # the server answers 403 to a close before accept
        await send({"type": "websocket.close", "code": 1008})


def _header(scope: Scope, name: bytes) -> list[bytes]:
    return [value for key, value in scope["headers"] if key == name]


def _cookie(headers: list[bytes], name: str) -> str | None:
    for header in headers:
        for part in header.decode("latin-1").split(";"):
            key, sep, value = part.strip().partition("=")
            if sep and key == name:
                return value.strip().strip('"') or None
    return None


def _public_matcher(paths: Iterable[str]) -> Callable[[str], bool]:
    exact: set[str] = set()
    prefixes: list[str] = []
    for path in paths:
        if not path.startswith("/"):
            raise ConfigError(f"public path {path!r} must start with '/'")
        exact.add(path.rstrip("/") or "/")
        prefixes.append(path.rstrip("/") + "/")
    if not exact:
        return lambda _path: False
    prefix_tuple = tuple(prefixes)

    def is_public(path: str) -> bool:
        if "/." in path or "//" in path:  # dot segments and empty ones are never public
            return False
        return path in exact or path.startswith(prefix_tuple)

    return is_public


class AuthMiddleware:
    """Authenticates every HTTP request and WebSocket handshake (pure ASGI).

    Credentials: ``Authorization: Bearer <JWT>`` (checked by
    ``wis.identity.authenticate``), else the session cookie (``wis.identity.from_session``).
    On a private path, no credentials is 401 with ``WWW-Authenticate: Bearer realm=...``
    (no error code), a bad token or session 401 ``error="invalid_token"``, a malformed
    header 400 ``error="invalid_request"``, an issuer or Redis outage 503. A 401 body says
    only which issuer's tokens are accepted; why the credentials were refused is logged
    (``wis2l_core.auth``, debug, with ``extra=``), since it may tell a caller more than
    their own mistake. On a public path the
    request goes through anyway, as :data:`ANONYMOUS` when the credentials do not check
    out. Requests authenticated by cookie with an unsafe method, and WebSocket handshakes
    authenticated by cookie, must come from the same origin (``Origin`` against ``Host``,
    else ``Sec-Fetch-Site``, else the ``Referer``; none of them: refused), else 403:
    browsers send cookies with cross-site forms.

    Args:
        app: the ASGI app to guard.
        wis: the runtime (a started :class:`~wis2l_core.Wis2l` with an issuer set).
        public_paths: paths served without credentials; each covers itself and what is
            below it (``"/health"`` covers ``/health/ready``), matched against
            ``scope["path"]`` (which includes a mount's ``root_path``). Paths with ``.``,
            ``..`` or empty segments are never public.
        realm: the ``realm`` of ``WWW-Authenticate``.
        cookie: the session cookie's name, or ``None`` to accept Bearer tokens only.

    Raises:
        ConfigError: a public path not starting with ``/``, or a realm with a quote,
            backslash or control character.
    """

    def __init__(
        self,
        app: ASGIApp,
        wis: _Runtime,
        public_paths: Iterable[str] = (),
        *,
        realm: str = "wis2l",
        cookie: str | None = "wis2l_session",
    ) -> None:
        if not realm.isprintable() or '"' in realm or "\\" in realm:
            raise ConfigError(f"realm {realm!r} must be printable, without quotes or '\\'")
        self.app = app
        self.wis = wis
        self.realm = realm
        self.cookie = cookie
        self._is_public = _public_matcher(public_paths)
        self._challenge = f'Bearer realm="{realm}"'.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection; ``lifespan`` and others pass through."""
        kind = scope["type"]
        if kind not in _CONNECTIONS:
            await self.app(scope, receive, send)
            return
        scope.pop(_RATELIMIT_HEADERS, None)  # an outer limiter's: it adds them itself
        public = self._is_public(scope["path"])
        try:
            principal, scheme = await self._authenticate(scope)
        except Unauthenticated as exc:
            log.debug(
                "credentials refused: %s",
                exc,
                extra={"reason": str(exc), "code": exc.code, "path": scope["path"]},
            )
            if not public:
                await self._refuse(scope, receive, send, exc)
                return
            principal, scheme = None, None
        except ServiceUnavailable as exc:
            if not public:
                log.warning("cannot authenticate: %s", exc, extra={"service": exc.service})
                detail = "cannot check credentials right now; try again shortly"
                await _respond(scope, receive, send, 503, detail, [(b"retry-after", b"5")])
                return
            principal, scheme = None, None
        if principal is None:
            if not public:
                await self._refuse(scope, receive, send, None)
                return
            scope["user"] = ANONYMOUS
            scope["auth"] = _NO_CREDENTIALS
        else:
            if (
                scheme == "session"
                and (kind == "websocket" or scope["method"] not in _SAFE_METHODS)
                and not _same_origin(scope)
            ):
                await _respond(scope, receive, send, 403, "cross-site request refused")
                return
            scope["user"] = principal
            # Action is a StrEnum: its members are the strings "@requires" looks for
            scope["auth"] = Credentials(scopes=principal.permissions, scheme=scheme)
        await self._call(scope, receive, send)

    async def _authenticate(
        self, scope: Scope
    ) -> tuple[Principal | None, Literal["bearer", "session"] | None]:
        authorization = _header(scope, b"authorization")
        if authorization:
            if len(authorization) > 1:
                raise Unauthenticated("more than one Authorization header", code="invalid_request")
            scheme, _, token = authorization[0].strip().partition(b" ")
            if scheme.lower() == b"bearer":
                token = token.strip()
                if not _B64TOKEN.fullmatch(token):
                    raise Unauthenticated("malformed Bearer token", code="invalid_request")
                return await self.wis.identity.authenticate(token.decode("ascii")), "bearer"
        if self.cookie is not None:
            cookies = _header(scope, b"cookie")
            session = _cookie(cookies, self.cookie) if cookies else None
            if session is not None:
                return await self.wis.identity.from_session(session), "session"
        return None, None

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, exc: Unauthenticated | None
    ) -> None:
        code = exc.code if exc is not None else None
        challenge = self._challenge
        if code is not None:
            challenge += f', error="{code}"'.encode()
        status = 400 if code == "invalid_request" else 401
        if exc is None or code is None:
            detail = "credentials required"
        elif code == "invalid_request":
            detail = str(exc)  # about the request's own form: a second header, a space
        else:
            detail = f"the credentials are not valid; tokens are accepted from {self._issuer()}"
        headers = [(b"www-authenticate", challenge), *scope.get(_RATELIMIT_HEADERS, ())]
        await _respond(scope, receive, send, status, detail, headers)

    def _issuer(self) -> str:
        try:
            return self.wis.identity.issuer
        except ConfigError:  # pragma: no cover - a runtime without an issuer refuses earlier
            return "the configured issuer"

    async def _call(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app; a Forbidden or Unauthenticated it raises before answering becomes
        403 / 401 (after it answered, it propagates: the response is already on its way)."""
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except (Forbidden, Unauthenticated) as exc:
            if started:
                raise
            if scope["type"] == "websocket":  # it may have read websocket.connect
                await send({"type": "websocket.close", "code": 1008})
            elif isinstance(exc, Forbidden):
                headers = scope.get(_RATELIMIT_HEADERS, ())
                await _respond(scope, receive, send, 403, str(exc), headers)
            else:
                await self._refuse(scope, receive, send, exc)


def _same_origin(scope: Scope) -> bool:
    """The one CSRF rule (:mod:`wis2l_core._origin`) against the request's own origin: its
    ``Host``, over http or https (an app behind a TLS proxy sees http)."""
    host = _first(scope, b"host")
    own = [f"{scheme}://{host}" for scheme in ("http", "https")] if host else []
    return same_origin(
        own,
        origin=_first(scope, b"origin"),
        fetch_site=_first(scope, b"sec-fetch-site"),
        referer=_first(scope, b"referer"),
    )


def _first(scope: Scope, name: bytes) -> str | None:
    values = _header(scope, name)
    return values[0].decode("latin-1") if values else None


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

    Redis down: with ``on_redis_down="allow"`` (the default) requests go through without
    a ``RateLimit`` field and the outage is logged once; with ``"refuse"`` they get 503.

    Args:
        app: the ASGI app to limit.
        wis: the runtime (its Redis client is used).
        limit: requests allowed in a burst, and per ``per`` on average.
        per: the window, in seconds or as a ``timedelta``.
        trusted_proxies: addresses or networks (``"10.0.0.0/8"``) of reverse proxies whose
            ``X-Forwarded-For`` is believed.
        policy: the quota policy's name in the headers (and in the Redis key).
        exempt_paths: paths (and what is below them) not counted, e.g. health probes.
        on_redis_down: ``"allow"`` or ``"refuse"``.

    Raises:
        ValidationError: ``limit`` < 1, ``per`` not positive, or more than a million
            requests per second.
        ConfigError: a trusted proxy that is not an address or network, a policy name
            that is not a plain token, or an unknown ``on_redis_down``.
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
        on_redis_down: Literal["allow", "refuse"] = "allow",
    ) -> None:
        seconds = per.total_seconds() if isinstance(per, timedelta) else float(per)
        if not isinstance(limit, int) or limit < 1:
            raise ValidationError("limit must be a positive integer", field="limit")
        if not seconds > 0 or math.isinf(seconds):
            raise ValidationError("per must be a positive number of seconds", field="per")
        if seconds / limit < 1e-6:  # below the resolution of the limiter's clock
            raise ValidationError("limit must be at most a million per second", field="limit")
        if not re.fullmatch(r"[a-z][a-z0-9_\-.]{0,63}", policy):
            raise ConfigError(f"policy {policy!r} must be a lower-case token")
        if on_redis_down not in ("allow", "refuse"):
            raise ConfigError("on_redis_down must be 'allow' or 'refuse'")
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
        self.on_redis_down = on_redis_down
        self._limiter = RateLimiter(wis.redis, fail_mode="raise")
        self._exempt = _public_matcher(exempt_paths)
        self._policy_header = (
            b"ratelimit-policy",
            f'"{policy}";q={limit};w={math.ceil(seconds)}'.encode(),
        )
        self._down_logged = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection; ``lifespan`` and exempt paths pass through."""
        kind = scope["type"]
        if (kind not in _CONNECTIONS) or self._exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        try:
            hit = await self._limiter.hit(
                f"{self.policy}:{self._caller(scope)}", limit=self.limit, per=self.per
            )
        except ServiceUnavailable as exc:
            if not self._down_logged:
                self._down_logged = True
                verb = "letting requests through" if self.on_redis_down == "allow" else "503"
                log.warning("rate limit unavailable (%s): %s", verb, exc)
            if self.on_redis_down == "refuse":
                detail = "rate limit cannot be checked right now"
                headers = [self._policy_header, (b"retry-after", b"1")]
                await _respond(scope, receive, send, 503, detail, headers)
                return
            scope[_RATELIMIT_HEADERS] = [self._policy_header]
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
        scope[_RATELIMIT_HEADERS] = headers
        if not hit.allowed:
            retry = max(1, math.ceil(hit.retry_after))
            headers.append((b"retry-after", str(retry).encode()))
            detail = f"rate limit of {self.limit} per {self.per:g} s exceeded; retry in {retry} s"
            await _respond(scope, receive, send, 429, detail, headers)
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
            forwarded = b",".join(_header(scope, b"x-forwarded-for")).decode("latin-1")
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
