"""Health probes over HTTP: ``wis2l_core.health_app(wis)`` served by uvicorn.

``health_app`` is a tiny ASGI app for Kubernetes-style probes:

- ``GET /health``        the full report as JSON (200 ok / degraded, 503 unhealthy)
- ``GET /health/live``   200 while the process runs
- ``GET /health/ready``  200 when the critical services answer, 503 while stopping

Mount it in your own ASGI app, or serve it alone as here. uvicorn comes with the
``examples`` extra (``pip install -e ".[examples]"``; the ``dev`` extra has it too)::

    python examples/health_server.py --port 8080
    curl -s localhost:8080/health

``--port 0`` picks a free port (the line ``serving http://127.0.0.1:<port>`` tells which).
SIGINT or SIGTERM stops the server, then the runtime, and the process exits 0. Set
DATABASE_URL / REDIS_URL / NATS_URL to use your servers, else an embedded stack runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import Generator

import uvicorn
from _common import runtime

from wis2l_core import health_app


class Server(uvicorn.Server):
    """uvicorn's server, stopping on SIGINT/SIGTERM without re-raising the signal.

    uvicorn re-raises a captured signal after it stops (to end the process the default
    way); here the runtime still has to stop cleanly after the server, so it does not.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Listen, then print the address (with ``--port 0``, the port chosen)."""
        await super().startup(sockets)
        if self.started:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            print(f"serving http://{host}:{port} (/health, /health/live, /health/ready)")


async def main(host: str, port: int) -> None:
    async with runtime() as wis:
        report = await wis.health()
        print(f"health     {report.status} at start")
        config = uvicorn.Config(health_app(wis), host=host, port=port, log_level="warning")
        server = Server(config)
        await server.serve()
        print("server stopped; stopping the runtime")
    print("stopped cleanly")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0: any free port")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    asyncio.run(main(args.host, args.port))
