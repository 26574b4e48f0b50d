"""`wis2l relay`: the outbox relay as a process of its own, until SIGTERM or SIGINT.

For apps that do not run a relay (synchronous apps, scripts, a web tier that should not
publish) and for scaling relays apart from the app. It opens the pool and NATS, runs one
:class:`~wis2l_core.events.outbox.OutboxRelay` with the partition settings every relay of
the deployment shares (``WIS2L_OUTBOX_PARTITIONS``), and on SIGTERM or SIGINT lets the
batch in hand finish (up to ``WIS2L_SHUTDOWN_TIMEOUT``), closes everything and exits 0.
Nothing is lost when it is killed instead: unmarked rows are published again by the next
relay, and JetStream drops the copies it already has.

``--health-port`` serves ``/health``, ``/health/live`` and ``/health/ready``
(:func:`wis2l_core.asgi.health.health_app`, with uvicorn) for the orchestrator's probes;
with ``--metrics`` also ``/metrics`` for Prometheus (the ``prometheus`` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import attrs

from wis2l_core.config import Settings
from wis2l_core.db.pool import Database
from wis2l_core.errors import ConfigError, ServiceUnavailable, ValidationError, Wis2lError
from wis2l_core.events.bus import EventBus
from wis2l_core.events.outbox import _MAX_BATCH, OutboxRelay
from wis2l_core.health import HealthChecker, HealthReport

__all__ = ["RelayProcess", "add_parser", "run"]

log = logging.getLogger("wis2l_core.cli.relay")

_ID = re.compile(r"[A-Za-z0-9_.:-]{1,48}")
"""A relay id: it ends up in the LISTEN session's application_name (63 bytes at most)."""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the `relay` command."""
    parser = subparsers.add_parser(
        "relay",
        help="run the outbox relay as its own process until SIGTERM",
        description="Publish committed events from the outbox to JetStream until SIGTERM "
        "or SIGINT (the batch in hand finishes, exit 0). Relays in several processes "
        "share the outbox's partitions; every one must use the same --partitions.",
    )
    parser.add_argument(
        "--partitions",
        type=int,
        metavar="N",
        help="outbox partitions, 1-1024 (default: WIS2L_OUTBOX_PARTITIONS, else 16)",
    )
    parser.add_argument(
        "--relay-id",
        metavar="ID",
        help="this relay's id among the relays (default: a random one); letters, digits, "
        "'_.:-', at most 48",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=1000,
        metavar="N",
        help=f"rows claimed per batch, 1-{_MAX_BATCH} (default 1000)",
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=1.0,
        metavar="S",
        help="seconds between passes when no notification arrives (default 1)",
    )
    parser.add_argument(
        "--lease",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds a relay's hold on its partitions lasts (default 10)",
    )
    parser.add_argument(
        "--health-port",
        type=int,
        metavar="PORT",
        help="serve /health, /health/live and /health/ready on this port (needs uvicorn)",
    )
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="also serve /metrics for Prometheus on the health port (the prometheus extra)",
    )
    parser.add_argument(
        "--health-host",
        default="127.0.0.1",
        metavar="HOST",
        help="address the health port binds (default 127.0.0.1)",
    )
    parser.set_defaults(func=run)

    def one_line(message: str) -> NoReturn:
        print(f"wis2l relay: error: {message} (see wis2l relay --help)", file=sys.stderr)
        raise SystemExit(2)

    parser.error = one_line  # type: ignore[method-assign]


def _settings(args: argparse.Namespace) -> Settings:
    """The settings from the environment, with the command line's overrides.

    Raises:
        ConfigError: a malformed variable or option.
    """
    settings = Settings.from_env()
    if args.partitions is not None:
        try:
            settings = attrs.evolve(settings, outbox_partitions=args.partitions)
        except (ConfigError, ValueError) as exc:
            raise ConfigError(
                "--partitions must be 1..1024", variable="WIS2L_OUTBOX_PARTITIONS"
            ) from exc
    if args.relay_id is not None and not _ID.fullmatch(args.relay_id):
        raise ConfigError(
            "--relay-id: letters, digits and '_.:-' only, at most 48", variable="relay_id"
        )
    if not 1 <= args.batch_size <= _MAX_BATCH:
        raise ConfigError(f"--batch-size must be 1..{_MAX_BATCH}", variable="batch_size")
    if not args.poll_interval > 0:
        raise ConfigError("--poll-interval must be a number of seconds > 0", variable="poll")
    if not args.lease >= 0.5:
        raise ConfigError("--lease must be at least 0.5 seconds", variable="lease")
    if args.health_port is not None and not 0 <= args.health_port <= 65535:
        raise ConfigError("--health-port must be 0..65535", variable="health_port")
    if args.metrics and args.health_port is None:
        raise ConfigError("--metrics needs --health-port", variable="metrics")
    return settings


def run(args: argparse.Namespace) -> int:
    """Run the relay until a signal; return the exit status (0 after a clean stop)."""
    try:
        settings = _settings(args)
    except ConfigError as exc:
        print(f"wis2l relay: error: {exc}", file=sys.stderr)
        return 2
    process = RelayProcess(
        settings,
        relay_id=args.relay_id,
        batch_size=args.batch_size,
        poll_interval=args.poll_interval,
        lease=args.lease,
    )

    def started() -> None:
        # Once up, a relay's outages (NATS or PostgreSQL lost, a batch not acknowledged)
        # belong in the service's log; before, a failure is the one line printed below.
        if not getattr(args, "verbose", False):
            logging.getLogger("wis2l_core").setLevel(logging.WARNING)

    try:
        return asyncio.run(
            process.run_until_signal(
                args.health_host, args.health_port, metrics=args.metrics, on_started=started
            )
        )
    except Wis2lError as exc:
        print(f"wis2l relay: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


class RelayProcess:
    """A pool, an event bus and an outbox relay: what `wis2l relay` runs.

    Provides what :func:`~wis2l_core.asgi.health.health_app` needs (``health()`` and
    ``stopping``). No I/O in the constructor.

    Args:
        settings: the servers, ``outbox_partitions``, ``shutdown_timeout``.
        relay_id: the relay's id (random when ``None``).
        batch_size, poll_interval, lease: as :class:`OutboxRelay` takes them.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        relay_id: str | None = None,
        batch_size: int = 1000,
        poll_interval: float = 1.0,
        lease: float = 10.0,
    ) -> None:
        self.settings = settings
        self.database = Database(settings)
        self.bus = EventBus(settings)
        self.relay = OutboxRelay(
            settings,
            self.database,
            self.bus,
            batch_size=batch_size,
            poll_interval=poll_interval,
            lease=lease,
        )
        if relay_id is not None:
            self.relay.relay_id = relay_id
        self._checker = HealthChecker.for_services(
            settings, database=self.database, nats=self.bus, outbox=self.relay
        )
        self._stopping = True

    @property
    def stopping(self) -> bool:
        """True until started, and from the moment a stop begins (readiness turns false)."""
        return self._stopping

    async def health(self, *, critical_only: bool = False) -> HealthReport:
        """The database, NATS and outbox checks (see :class:`HealthChecker`)."""
        return await self._checker.run(critical_only=critical_only)

    async def start(self) -> None:
        """Open the pool and NATS and start the relay.

        In production a database or NATS that cannot be reached fails the start; in
        development they are retried in the background, as the runtime does.

        Raises:
            ServiceUnavailable: production, and PostgreSQL or NATS is down.
        """
        production = self.settings.is_production
        try:
            await self.database.open(wait=True)
        except ServiceUnavailable:
            if production:
                raise
            await self.database.open(wait=False)
        await self.bus.open(require=production)
        await self.relay.start()
        self._stopping = False

    async def stop(self) -> None:
        """Let the batch in hand finish (up to ``shutdown_timeout``), then close all."""
        self._stopping = True
        await self.relay.stop()
        await self.bus.close(1.0)
        await self.database.close()

    async def run_until_signal(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        metrics: bool = False,
        on_started: Callable[[], None] | None = None,
    ) -> int:
        """Start, serve health on ``port`` if given, wait for SIGTERM/SIGINT, stop; 0.

        With ``metrics`` the port also serves ``/metrics`` (Prometheus: every metric the
        library records, the outbox's included). ``on_started`` is called once
        everything is up.

        Raises:
            ConfigError: ``metrics`` without the ``prometheus`` extra.
        """
        received = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, received.set)
        server: _HealthServer | None = None
        try:
            if port is not None:
                server = _HealthServer(self, host, port, metrics=metrics)
                await server.start()
            await self.start()
            where = f"; health on http://{host}:{server.port}/health" if server else ""
            if server is not None and metrics:
                where += f", metrics on http://{host}:{server.port}/metrics"
            print(
                f"wis2l relay: relay {self.relay.relay_id} publishing"
                f" ({self.settings.outbox_partitions} partitions){where}",
                file=sys.stderr,
                flush=True,
            )
            if on_started is not None:
                on_started()
            await received.wait()
            log.info("signal received; stopping")
        finally:
            await self.stop()
            if server is not None:
                await server.stop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        print(
            f"wis2l relay: stopped; published {self.relay.published} event(s)",
            file=sys.stderr,
            flush=True,
        )
        return 0


class _HealthServer:
    """uvicorn serving the health app (and ``/metrics`` when asked)."""

    def __init__(self, source: RelayProcess, host: str, port: int, *, metrics: bool) -> None:
        from wis2l_core.asgi.health import health_app

        if metrics:
            try:
                app = health_app(source, metrics=True)
            except ImportError as exc:
                raise ConfigError(
                    "--metrics needs the prometheus extra: pip install 'wis2l-core[prometheus]'",
                    variable="metrics",
                ) from exc
        else:
            app = health_app(source)
        self.metrics = app.metrics
        self._app = app
        self._host, self._port = host, port
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port (the one chosen when 0 was asked)."""
        servers = getattr(self._server, "servers", None) or []
        for srv in servers:
            for sock in srv.sockets:
                return int(sock.getsockname()[1])
        return self._port

    async def start(self) -> None:
        try:
            import uvicorn
        except ImportError as exc:
            raise ConfigError(
                "--health-port needs uvicorn: pip install 'wis2l-core[relay]'",
                variable="health_port",
            ) from exc

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield  # the relay handles SIGTERM/SIGINT itself

        config = uvicorn.Config(
            self._app, host=self._host, port=self._port, log_level="warning", lifespan="off"
        )
        self._server = Server(config)
        self._task = asyncio.create_task(self._server.serve(), name="wis2l-relay-health")
        while not self._server.started:
            if self._task.done():  # e.g. the port is taken (uvicorn exits, having logged)
                with contextlib.suppress(BaseException):
                    self._task.result()
                raise ValidationError(
                    f"--health-port {self._port}: cannot serve on {self._host}"
                    " (the port is taken, or the address is not this host's)",
                    field="health_port",
                )
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 5)
        if self.metrics is not None:
            self.metrics.close()  # the library stops recording into it
