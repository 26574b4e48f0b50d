"""PostgreSQL primary + streaming standby, and PgBouncer, for the cluster tests.

The servers are the ``embedded`` extra's PostgreSQL binaries (``initdb``, ``postgres``,
``pg_basebackup``, ``pg_ctl``) and Debian's ``/usr/sbin/pgbouncer``, on free loopback
ports, each in a process group of its own under ``base``. Both refuse to run as root: as
root they run as ``WIS2L_EMBEDDED_USER`` (default ``nobody``), like the embedded stack.
Tests crash a server with SIGKILL to its whole process group (the postmaster and every
backend, as when its host dies) and stop the rest by process id.

The standby replicates synchronously (``synchronous_standby_names = '*'``): a commit is
acknowledged only once the standby has it, which is what "no acknowledged write lost
after a failover" needs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import attrs
import psycopg
from tests.clusters import free_port

from wis2l_core.dev._binaries import _pg_locations, _reachable, _run_as, _stage_pginstall

__all__ = ["PGBOUNCER", "PgBouncer", "PgCluster", "PgServer", "pgbouncer_version"]

PGBOUNCER = Path("/usr/sbin/pgbouncer")
"""Debian's PgBouncer (``apt-get install pgbouncer``); the PgBouncer tests skip without it."""

_START_TIMEOUT = 30.0


def pgbouncer_version() -> tuple[int, int] | None:
    """PgBouncer's (major, minor), or ``None`` when it is not installed."""
    if not PGBOUNCER.exists():
        return None
    out = subprocess.run(
        [str(PGBOUNCER), "--version"], capture_output=True, text=True, check=False
    ).stdout
    major, minor = out.split()[1].split(".")[:2]
    return int(major), int(minor)


@attrs.define
class PgServer:
    """One ``postgres`` process: its data directory, port and process (group) id."""

    name: str
    pgdata: Path
    port: int
    pid: int = 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"


class PgCluster:
    """A primary and (after :meth:`add_standby`) a synchronous streaming standby."""

    def __init__(self, base: Path | None = None) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="wis2l-pgcluster-")) if base is None else base
        self.base.chmod(0o711)
        self._run_as = _run_as()
        pginstall, libs = _pg_locations()
        if self._run_as is not None:
            uid, gids = self._run_as[0], {self._run_as[1], *self._run_as[2]}
            if not (_reachable(pginstall / "bin", uid, gids) and _reachable(libs, uid, gids)):
                pginstall = _stage_pginstall(pginstall, libs)
        self.bindir = pginstall / "bin"
        self.primary = PgServer("primary", self.base / "primary", free_port())
        self.standby: PgServer | None = None
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    # -- processes ---------------------------------------------------------------------

    def _mkdir(self, path: Path, mode: int = 0o700) -> Path:
        path.mkdir(mode=mode)
        if self._run_as is not None:
            os.chown(path, self._run_as[0], self._run_as[1])
        return path

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        """Start ``argv`` as the unprivileged user in a new process group; log to ``base``."""
        log = (self.base / f"{name}.log").open("ab")
        user = {} if self._run_as is None else {
            "user": self._run_as[0],
            "group": self._run_as[1],
            "extra_groups": self._run_as[2],
        }  # fmt: skip
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.base,
            start_new_session=True,
            **user,  # type: ignore[arg-type]
        )
        log.close()
        self._procs[name] = proc
        return proc

    def run(self, name: str, argv: list[str], timeout: float = 60.0) -> None:
        """Run a tool to completion; raise with its log's tail if it fails."""
        proc = self.spawn(name, argv)
        if proc.wait(timeout=timeout) != 0:
            raise RuntimeError(f"{name} failed: {self.tail(name)}")

    def tail(self, name: str, size: int = 2000) -> str:
        path = self.base / f"{name}.log"
        return path.read_text(errors="replace")[-size:] if path.exists() else ""

    def _start(self, server: PgServer, *extra: str) -> None:
        proc = self.spawn(
            server.name,
            [
                str(self.bindir / "postgres"),
                "-D", str(server.pgdata),
                "-h", "127.0.0.1",
                "-p", str(server.port),
                "-k", "",
                "-c", "max_connections=200",
                "-c", "wal_level=replica",
                "-c", "max_wal_senders=5",
                "-c", "fsync=off",  # a crash here is a process crash: the page cache survives
                "-c", "full_page_writes=off",
                *extra,
            ],
        )  # fmt: skip
        server.pid = proc.pid
        _wait_for(lambda: _answers(server.url()), f"{server.name} on {server.port}", proc)

    # -- the cluster ---------------------------------------------------------------------

    def start_primary(self) -> PgServer:
        """initdb and start the primary, with a database ``wis2l``."""
        self._mkdir(self.primary.pgdata)
        self.run(
            "initdb",
            [
                str(self.bindir / "initdb"),
                "-D", str(self.primary.pgdata),
                "-U", "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale-provider=builtin",
                "--builtin-locale=C.UTF-8",
                "--locale=C",
                "--no-instructions",
                "--no-sync",
            ],
        )  # fmt: skip
        self._start(self.primary)
        with psycopg.connect(self.primary.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE wis2l")
        return self.primary

    def add_standby(self) -> PgServer:
        """pg_basebackup the primary into a streaming standby and start it."""
        standby = PgServer("standby", self.base / "standby", free_port())
        self._mkdir(standby.pgdata)
        self.run(
            "basebackup",
            [
                str(self.bindir / "pg_basebackup"),
                "-h", "127.0.0.1",
                "-p", str(self.primary.port),
                "-U", "postgres",
                "-D", str(standby.pgdata),
                "-R",  # standby.signal + primary_conninfo
                "-X", "stream",
                "-c", "fast",  # checkpoint now, not spread over minutes
                "--no-sync",
            ],
        )  # fmt: skip
        # After promotion it is the primary; no standby of its own to wait for.
        self._start(standby, "-c", "synchronous_standby_names=", "-c", "hot_standby=on")
        self.standby = standby

        def streaming() -> bool:
            with psycopg.connect(self.primary.url(), autocommit=True) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_replication"
                    " WHERE state = 'streaming' AND sync_state = 'sync'"
                ).fetchone()
                return row is not None and row[0] == 1

        with psycopg.connect(self.primary.url(), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
            conn.execute("SELECT pg_reload_conf()")
        _wait_for(streaming, "the standby to stream synchronously")
        return standby

    def kill(self, server: PgServer) -> None:
        """SIGKILL the server's postmaster and every backend (its process group)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        self._procs[server.name].wait(timeout=10)

    def restart(self, server: PgServer) -> None:
        """Start ``server`` again (after :meth:`kill`: crash recovery replays its WAL)."""
        self._start(server)

    def promote(self, server: PgServer) -> None:
        """``pg_ctl promote -w``: returns once ``server`` accepts writes."""
        self.run(
            "promote", [str(self.bindir / "pg_ctl"), "promote", "-w", "-D", str(server.pgdata)]
        )

    def stop(self) -> None:
        """Stop every process started here (SIGINT: fast shutdown; SIGKILL after 10 s)."""
        for proc in self._procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGINT)
        for proc in self._procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PgCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class PgBouncer:
    """PgBouncer in front of ``server`` in ``mode`` (``transaction`` or ``session``).

    ``max_prepared_statements`` (PgBouncer 1.21+) is written only when above zero.
    """

    def __init__(
        self,
        cluster: PgCluster,
        server: PgServer,
        mode: str,
        pool_size: int = 20,
        max_prepared_statements: int = 0,
    ) -> None:
        self.cluster = cluster
        self.mode = mode
        self.port = free_port()
        self.name = f"pgbouncer-{mode}"
        folder = cluster._mkdir(cluster.base / self.name, 0o755)
        (folder / "userlist.txt").write_text('"postgres" ""\n')
        self.config = folder / "pgbouncer.ini"
        self.config.write_text(
            f"""[databases]
* = host=127.0.0.1 port={server.port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {folder / "userlist.txt"}
pool_mode = {mode}
default_pool_size = {pool_size}
max_client_conn = 1000
server_reset_query = DISCARD ALL
"""
            + (
                f"max_prepared_statements = {max_prepared_statements}\n"
                if max_prepared_statements
                else ""
            )
        )
        self.pid = 0

    def url(self, database: str = "wis2l") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> PgBouncer:
        proc = self.cluster.spawn(self.name, [str(PGBOUNCER), str(self.config)])
        self.pid = proc.pid
        _wait_for(lambda: _answers(self.url("postgres")), f"{self.name} on {self.port}", proc)
        return self


def _answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def _wait_for(check: object, what: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while not check():  # type: ignore[operator]
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: exited with code {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {_START_TIMEOUT} s")
        time.sleep(0.05)
