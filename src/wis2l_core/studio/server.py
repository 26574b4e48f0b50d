"""Serving the studio: uvicorn in the runtime's own event loop, loopback by default.

A non-loopback address exposes the data to the network, so it is served only behind the
identity work's :class:`~wis2l_core.asgi.AuthMiddleware` with the admin role required,
and only when an issuer is configured (``WIS2L_OIDC_ISSUER``); otherwise the studio
refuses to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from types import FrameType
from typing import Any

import uvicorn

from wis2l_core._net import is_loopback
from wis2l_core.errors import ConfigError
from wis2l_core.studio.app import create_app
from wis2l_core.studio.live import LiveFeed

__all__ = ["StudioServer", "guard", "is_loopback"]

_FORBIDDEN = b"<!doctype html><title>Forbidden</title><p>The studio needs the admin role.</p>"


class _AdminOnly:
    """Lets through only callers whose principal (set by ``AuthMiddleware``) is an admin."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            role = getattr(scope.get("user"), "role", None)
            if str(role) != "admin":
                await send(
                    {
                        "type": "http.response.start",
                        "status": 403,
                        "headers": [(b"content-type", b"text/html; charset=utf-8")],
                    }
                )
                await send({"type": "http.response.body", "body": _FORBIDDEN})
                return
        await self.app(scope, receive, send)


def guard(app: Any, wis: Any, host: str) -> Any:
    """``app`` as served on ``host``: unchanged on loopback, else behind authentication.

    Raises:
        ConfigError: a non-loopback ``host`` without the auth extra or without an issuer.
    """
    if is_loopback(host):
        return app
    try:
        from wis2l_core.asgi import AuthMiddleware
    except ImportError as exc:
        raise ConfigError(
            f"binding the studio to {host} needs authentication, and the auth extra is not "
            "installed (pip install 'wis2l-core[auth]'); bind 127.0.0.1 instead",
            variable="--host",
        ) from exc
    if not wis.settings.oidc_issuer:
        raise ConfigError(
            f"binding the studio to {host} needs authentication (admin role): set "
            "WIS2L_OIDC_ISSUER, or bind 127.0.0.1",
            variable="WIS2L_OIDC_ISSUER",
        )
    return AuthMiddleware(_AdminOnly(app), wis)


class _Server(uvicorn.Server):
    """uvicorn's server, ending the live streams as soon as a shutdown is asked for
    (Ctrl-C), so its graceful shutdown does not wait for them to time out."""

    def __init__(self, config: uvicorn.Config, live: LiveFeed) -> None:
        super().__init__(config)
        self.live = live

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.live.end_streams()
        super().handle_exit(sig, frame)


class StudioServer:
    """The studio on ``host:port`` (uvicorn's ``Server`` in the current event loop).

    Args:
        wis: a started ``Wis2l``.
        host: the address to bind (loopback unless authentication is set up).
        port: the port (``0``: any free one; :attr:`url` tells which).
        write: allow editing through the repositories.

    Raises:
        ConfigError: a non-loopback ``host`` that cannot be guarded (see :func:`guard`).
    """

    def __init__(self, wis: Any, *, host: str = "127.0.0.1", port: int = 5555, write: bool = False):
        self.live = LiveFeed(wis.settings)
        self.app = create_app(wis, write=write, live=self.live, host=host, port=port)
        config = uvicorn.Config(
            guard(self.app, wis, host),
            host=host,
            port=port,
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        self.server = _Server(config, self.live)
        self.host = host
        self._port = port
        self._socket: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """``http://host:port/`` with the bound port."""
        port = self._socket.getsockname()[1] if self._socket is not None else self._port
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{port}/"

    async def start(self) -> str:
        """Bind and serve in the background; return :attr:`url` once listening.

        Raises:
            OSError: the address cannot be bound (in use, not local ...).
        """
        # Bound here, not by uvicorn, whose bind failure is a sys.exit().
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host.strip("[]"), self._port))
        except OSError:
            sock.close()
            raise
        self._socket = sock
        self.app.state.studio.serve_on(self.host, sock.getsockname()[1])
        await self.live.start()
        self._task = asyncio.create_task(self.server.serve(sockets=[sock]), name="wis2l-studio")
        while not self.server.started:
            if self._task.done():
                await self.live.stop()
                raise OSError(f"cannot serve the studio on {self.host}:{self._port}")
            await asyncio.sleep(0.02)
        return self.url

    async def wait(self) -> None:
        """Until the server exits (Ctrl-C or :meth:`stop`)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        """End the live streams and stop the server (idempotent)."""
        await self.live.stop()
        self.server.should_exit = True
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()
