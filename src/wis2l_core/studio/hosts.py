"""The names the studio answers to, and the guard that refuses every other (pure ASGI).

DNS rebinding: a page on any site can point its own name at 127.0.0.1 after it loaded,
and its script then reads the studio as if it were same-origin. The browser still sends
that site's name in ``Host``, so a request whose ``Host`` is not a name of the address
the studio is bound to is refused before any handler runs (pages, static files, the live
stream, the writes): 421 Misdirected Request, echoing nothing. The names are
``127.0.0.1``, ``localhost``, ``[::1]`` and the ``--host`` given, each with the bound
port; the writes' ``Origin`` is checked against the same list (:func:`origins`), never
against the request's own URL.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import Any

__all__ = ["LOOPBACK_NAMES", "HostGuard", "host_names", "origins"]

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
"""The loopback names the studio always answers to (with its port)."""

_REFUSED = (
    b"Misdirected request: the studio answers only to the address it is served on "
    b"(127.0.0.1, localhost, [::1] or its --host, with its port).\n"
)


def host_names(host: str, port: int) -> frozenset[str]:
    """The ``Host`` values accepted for a studio bound to ``host:port`` (lower case).

    An IPv6 address is bracketed, as in ``Host``; on port 80 the bare names count too.
    """
    name = host.strip().lower()
    if ":" in name and not name.startswith("["):
        name = f"[{name}]"
    names = {*LOOPBACK_NAMES, name}
    accepted = {f"{n}:{port}" for n in names}
    if port == 80:
        accepted |= names
    return frozenset(accepted)


def origins(hosts: Iterable[str]) -> frozenset[str]:
    """The origins of pages served under ``hosts`` (the studio speaks plain HTTP)."""
    return frozenset(f"http://{h}" for h in hosts)


class HostGuard:
    """Refuses a request (or WebSocket handshake) whose ``Host`` is not accepted.

    Args:
        app: the ASGI app behind the guard.
        accepted: returns the accepted ``Host`` values (read per request: the port of a
            server started on port 0 is known only once it is bound).
    """

    def __init__(self, app: Any, accepted: Callable[[], Collection[str]]) -> None:
        self.app = app
        self.accepted = accepted

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            hosts = [value for key, value in scope["headers"] if key == b"host"]
            if len(hosts) != 1 or hosts[0].decode("latin-1").lower() not in self.accepted():
                await _refuse(scope, send)
                return
        await self.app(scope, receive, send)


async def _refuse(scope: Any, send: Any) -> None:
    if scope["type"] == "websocket":  # before accept: the server answers 403
        await send({"type": "websocket.close", "code": 1008})
        return
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(_REFUSED)).encode()),
        (b"cache-control", b"no-store"),
    ]
    await send({"type": "http.response.start", "status": 421, "headers": headers})
    await send({"type": "http.response.body", "body": _REFUSED})
