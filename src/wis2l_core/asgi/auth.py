"""``AuthMiddleware``: who is calling, for any ASGI 3 app (pure ASGI, no framework imported).

It puts the caller in ``scope["user"]`` (a :class:`~wis2l_core.auth.Principal`, or
:class:`~wis2l_core.auth.access.Anonymous` on a public path) and :class:`Credentials` in
``scope["auth"]``, which is where Starlette's and Litestar's ``request.user`` and
``request.auth`` read them. Refusals follow RFC 6750 and RFC 9457
(``application/problem+json`` bodies); WebSocket handshakes are refused before ``accept``.

With Starlette or FastAPI, add it with ``app.add_middleware(...)`` (the last added runs
first, so add :class:`~wis2l_core.asgi.RateLimitMiddleware` before it for per-user
limits): inside Starlette's error middleware, ``AuthMiddleware`` also turns a
``Forbidden`` or ``Unauthenticated`` that an endpoint raises into 403 / 401.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Literal, Protocol

import attrs

from wis2l_core.asgi._http import (
    CONNECTIONS,
    RATELIMIT_HEADERS,
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    cookie,
    first_header,
    header_values,
    path_matcher,
    respond_problem,
)
from wis2l_core.asgi._origin import same_origin
from wis2l_core.auth.access import Anonymous
from wis2l_core.auth.principal import Principal
from wis2l_core.errors import ConfigError, Forbidden, ServiceUnavailable, Unauthenticated

__all__ = ["ANONYMOUS", "AuthMiddleware", "Credentials"]

log = logging.getLogger("wis2l_core.auth")

ANONYMOUS = Anonymous()
"""``scope["user"]`` on a public path when no valid credentials came."""

_B64TOKEN = re.compile(rb"[A-Za-z0-9\-._~+/]+=*")
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class _IdentitySource(Protocol):
    @property
    def issuer(self) -> str: ...

    async def authenticate(self, token: str) -> Principal: ...

    async def from_session(self, token: str) -> Principal: ...


class _Runtime(Protocol):
    """What the middleware needs from ``Wis2l``."""

    @property
    def identity(self) -> _IdentitySource: ...


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
        self._is_public = path_matcher(public_paths)
        self._challenge = f'Bearer realm="{realm}"'.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection; ``lifespan`` and others pass through."""
        kind = scope["type"]
        if kind not in CONNECTIONS:
            await self.app(scope, receive, send)
            return
        scope.pop(RATELIMIT_HEADERS, None)  # an outer limiter's: it adds them itself
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
                await respond_problem(scope, receive, send, 503, detail, [(b"retry-after", b"5")])
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
                await respond_problem(scope, receive, send, 403, "cross-site request refused")
                return
            scope["user"] = principal
            # Action is a StrEnum: its members are the strings "@requires" looks for
            scope["auth"] = Credentials(scopes=principal.permissions, scheme=scheme)
        await self._call(scope, receive, send)

    async def _authenticate(
        self, scope: Scope
    ) -> tuple[Principal | None, Literal["bearer", "session"] | None]:
        authorization = header_values(scope, b"authorization")
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
            cookies = header_values(scope, b"cookie")
            session = cookie(cookies, self.cookie) if cookies else None
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
        headers = [(b"www-authenticate", challenge), *scope.get(RATELIMIT_HEADERS, ())]
        await respond_problem(scope, receive, send, status, detail, headers)

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
                headers = scope.get(RATELIMIT_HEADERS, ())
                await respond_problem(scope, receive, send, 403, str(exc), headers)
            else:
                await self._refuse(scope, receive, send, exc)


def _same_origin(scope: Scope) -> bool:
    """The one CSRF rule (:mod:`wis2l_core.asgi._origin`) against the request's own origin:
    its ``Host``, over http or https (an app behind a TLS proxy sees http)."""
    host = first_header(scope, b"host")
    own = [f"{scheme}://{host}" for scheme in ("http", "https")] if host else []
    return same_origin(
        own,
        origin=first_header(scope, b"origin"),
        fetch_site=first_header(scope, b"sec-fetch-site"),
        referer=first_header(scope, b"referer"),
    )
