"""The ASGI types and the helpers the wing's apps and middlewares share.

The aliases are ASGI 3's (as in ``starlette.types``); the helpers read request headers and
cookies, match configured paths, and send a whole response, JSON or
``application/problem+json`` (RFC 9457), in two messages.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from typing import Any

import orjson

from wis2l_core.errors import ConfigError

__all__ = [
    "CONNECTIONS",
    "RATELIMIT_HEADERS",
    "ASGIApp",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "cookie",
    "first_header",
    "header_values",
    "path_matcher",
    "respond_problem",
    "send_response",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CONNECTIONS = frozenset({"http", "websocket"})
"""The scope types a middleware acts on; others (``lifespan``) pass through."""

RATELIMIT_HEADERS = "wis2l.ratelimit_headers"
"""The scope key where ``RateLimitMiddleware`` leaves its fields, so that a refusal
``AuthMiddleware`` answers for the app (a ``Forbidden`` it raised) carries them too."""

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    429: "Too Many Requests",
    503: "Service Unavailable",
}


def header_values(scope: Scope, name: bytes) -> list[bytes]:
    """Every value of the (lower-case) header ``name``, in order."""
    return [value for key, value in scope["headers"] if key == name]


def first_header(scope: Scope, name: bytes) -> str | None:
    """The first value of the (lower-case) header ``name`` as text, or ``None``."""
    values = header_values(scope, name)
    return values[0].decode("latin-1") if values else None


def cookie(headers: list[bytes], name: str) -> str | None:
    """The value of cookie ``name`` in these ``Cookie`` headers (unquoted), or ``None``."""
    for header in headers:
        for part in header.decode("latin-1").split(";"):
            key, sep, value = part.strip().partition("=")
            if sep and key == name:
                return value.strip().strip('"') or None
    return None


def path_matcher(paths: Iterable[str]) -> Callable[[str], bool]:
    """A test for whether a request path is one of ``paths`` or below one of them.

    Paths with ``.``, ``..`` or empty segments never match.

    Raises:
        ConfigError: a path not starting with ``/``.
    """
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

    def matches(path: str) -> bool:
        if "/." in path or "//" in path:  # dot segments and empty ones are never public
            return False
        return path in exact or path.startswith(prefix_tuple)

    return matches


async def send_response(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    headers: Sequence[tuple[bytes, bytes]] = (),
    *,
    head: bool = False,
    prefix: str = "http",
) -> None:
    """Send one whole, uncacheable response (no body for ``HEAD``).

    ``prefix`` is ``"websocket.http"`` to answer a WebSocket handshake with a response
    (the ``websocket.http.response`` extension).
    """
    start = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *headers,
    ]
    await send({"type": f"{prefix}.response.start", "status": status, "headers": start})
    await send({"type": f"{prefix}.response.body", "body": b"" if head else body})


async def respond_problem(  # noqa: PLR0917 (scope, receive, send come first, as in ASGI)
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    detail: str,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Send an ``application/problem+json`` response; for a WebSocket, refuse the handshake
    without accepting it."""
    body = orjson.dumps(
        {"type": "about:blank", "title": _TITLES[status], "status": status, "detail": detail}
    )
    kind = b"application/problem+json"
    if scope["type"] == "http":
        await send_response(send, status, body, kind, headers)
        return
    message = await receive()  # websocket.connect: the server waits for our answer
    if message["type"] != "websocket.connect":
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        await send_response(send, status, body, kind, headers, prefix="websocket.http")
    else:  # the server answers 403 to a close before accept
        await send({"type": "websocket.close", "code": 1008})
