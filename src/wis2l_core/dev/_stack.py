"""``EmbeddedStack``: the three servers started together, probed, and stopped."""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import functools
import logging
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import psycopg

from wis2l_core.config import Settings
from wis2l_core.dev._binaries import (
    _cache_parent,
    _copy_cluster,
    _nats_binary,
    _pg_locations,
    _pg_version,
    _private_dir,
    _reachable,
    _run_as,
    _RunAs,
    _stage_pginstall,
    _user_name,
    _valkey_binary,
)
from wis2l_core.dev._process import (
    _SPAWNER,
    _CancelledError,
    _Child,
    _free_port,
    _pdeathsig_preexec,
    _PortTakenError,
    _probe_nats,
    _probe_postgres,
    _probe_valkey,
    _ServerError,
    _summary,
    _tail,
    _terminate,
)
from wis2l_core.errors import StartupError

if TYPE_CHECKING:
    from wis2l_core.dev.issuer import DevIssuer

ROLE_CLAIM = "wis2l_role"
"""The dev issuer's role claim (``wis2l_core.dev.issuer.ROLE_CLAIM``, without importing it)."""

_log = logging.getLogger("wis2l_core.dev")

DATABASE_NAME = "wis2l"
_LABELS = {"database": "PostgreSQL", "redis": "Valkey", "nats": "NATS"}
_LOG_NAMES = {"database": "postgres", "redis": "valkey", "nats": "nats"}
_PORT_ATTEMPTS = 3
_POLL = 0.02
_TEMPLATE = "template-1"  # bump when the initdb options change
_OWN_CWD = Path("/proc/self/cwd")  # Linux: the process's working directory, by a magic link


_LIVE: set[EmbeddedStack] = set()
_LIVE_LOCK = threading.Lock()


@atexit.register
def _stop_all() -> None:
    with _LIVE_LOCK:
        stacks = list(_LIVE)
    for stack in stacks:
        stack.stop()


class EmbeddedStack:
    """PostgreSQL, Valkey and NATS (with JetStream) on free loopback ports.

    ::

        with EmbeddedStack() as stack:                 # a temporary directory
            settings = stack.settings(namespace="demo")
        with EmbeddedStack("~/.wis2l") as stack:      # data kept between runs
            print(stack.environ())

    Args:
        data_dir: where the servers keep their data (``postgres/``, ``valkey/``, ``nats/``,
            ``logs/``); created (mode 0700) when missing and kept at stop, or removed
            again when the start that created it fails. One that belongs to another user,
            or that group or others may write into, is refused. ``None`` uses a temporary
            directory, removed at stop.
        start_timeout: seconds each server may take to answer.
        oidc: also run a local OpenID Connect issuer (:class:`~wis2l_core.dev.issuer.DevIssuer`)
            so that ``wis.identity`` works; ``None`` (the default) runs it when the
            ``auth`` extra is installed.
        oidc_state_dir: where the issuer keeps its URL and keys, for ``wis2l dev token``
            (default: ``data_dir``, or nowhere for a temporary stack); created 0700 and
            checked like ``data_dir``.

    Attributes:
        startup_seconds: how long the last :meth:`start` took until all three answered.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        start_timeout: float = 60.0,
        oidc: bool | None = None,
        oidc_state_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self._data_dir = None if data_dir is None else Path(data_dir).expanduser()
        self._oidc = oidc
        self._oidc_state = Path(oidc_state_dir) if oidc_state_dir is not None else self._data_dir
        self.issuer: DevIssuer | None = None
        """The local OpenID Connect issuer while started (``None`` without the auth extra)."""
        self._start_timeout = start_timeout
        self._state_lock = threading.RLock()  # start/stop, one at a time
        self._children_lock = threading.Lock()  # _children and _cancel, also the spawner's
        self._children: list[_Child] = []
        self._cancel = threading.Event()
        self._ports: dict[str, int] = {}
        self._pids: dict[str, int] = {}
        self._base: Path | None = None
        self._made: Path | None = None  # the directory this start created, until it succeeds
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

    def oidc_environ(self) -> dict[str, str]:
        """The variables that point ``wis.identity`` at the dev issuer (empty without
        one): ``WIS2L_OIDC_ISSUER``, ``WIS2L_OIDC_AUDIENCE`` and
        ``WIS2L_OIDC_ROLE_CLAIM`` (so ``wis2l dev token --role admin`` makes an admin;
        leave it unset in production)."""
        if self.issuer is None or not self._started:
            return {}
        return {**self.issuer.environ(), "WIS2L_OIDC_ROLE_CLAIM": ROLE_CLAIM}

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
        if self.issuer is not None:
            fields |= {
                "oidc_issuer": self.issuer.issuer,
                "oidc_audience": self.issuer.audience,
                "oidc_role_claim": ROLE_CLAIM,
            }
        return Settings(**(fields | overrides))

    def start(self) -> None:
        """Start the three servers and wait until each answers a real request.

        Does nothing when already started. On any failure, and on ``KeyboardInterrupt``,
        whatever did start is stopped again before the exception propagates.

        Raises:
            StartupError: a server could not start; the message names it and ends with the
                last lines of its log, ``failures`` maps each failed service to a reason.
                Also when ``data_dir`` or ``oidc_state_dir`` belongs to another user or
                others may write into it (nothing is started).
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
                self._start_issuer()
            except BaseException:
                self.stop()
                made, self._made = self._made, None
                if made is not None:  # never leave a half-made data directory behind
                    shutil.rmtree(made, ignore_errors=True)
                raise
            self._made = None
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
            issuer, self.issuer = self.issuer, None
            if issuer is not None:
                issuer.stop()
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

    def _start_issuer(self) -> None:
        if self._oidc is False:
            return
        try:
            from wis2l_core.dev.issuer import DevIssuer
        except ImportError:
            if self._oidc:
                raise StartupError(
                    "the dev OIDC issuer needs the auth extra: pip install 'wis2l-core[auth]'"
                ) from None
            return
        self.issuer = DevIssuer(state_dir=self._oidc_state).start()

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
            if isinstance(exc, PermissionError) and not exc.filename:  # _private_dir's
                reason = str(exc)
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
        state = self._oidc_state
        if self._oidc is not False and state is not None and state != self._data_dir:
            _private_dir(state, "state directory")
        if self._data_dir is None:
            base = Path(tempfile.mkdtemp(prefix="wis2l-embedded-"))
            self._base = base
            if run_as is not None:
                base.chmod(0o711)  # our own directory: let the PostgreSQL user through
        else:
            self._made = _private_dir(self._data_dir, "data directory")
            base = self._data_dir.resolve()
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
        cwd: Path | None = None,
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
                        cwd=cwd or base,  # entered before the uid switch
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
        cwd: Path | None = None,
    ) -> int:
        """Start a server on a free port (another one if it was taken); return the port."""
        began = time.monotonic()
        for _attempt in range(_PORT_ATTEMPTS):
            port = _free_port()
            child = self._spawn(
                argv_for(port),
                base,
                _LOG_NAMES[name],
                run_as=run_as,
                stop_signal=stop_signal,
                cwd=cwd,
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
        via_cwd = False
        if run_as is not None:
            uid, gids = run_as[0], {run_as[1], *run_as[2]}
            if not _reachable(base, uid, gids):
                # A private home such as /root: the cluster is the PostgreSQL user's, its
                # parents stay private. PostgreSQL starts in it (we enter it as root,
                # before the uid switch) and is told /proc/self/cwd, which the kernel
                # resolves without searching the path again.
                if not _OWN_CWD.is_dir():
                    raise _ServerError(
                        f"PostgreSQL runs as user {_user_name()!r} (it refuses root), who "
                        f"cannot reach {base}; use a data directory outside private home "
                        "directories, or set WIS2L_EMBEDDED_USER"
                    )
                via_cwd = True
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
            self._initdb(pginstall / "bin", fresh, base, run_as, sync=True, via_cwd=via_cwd)
            fresh.rename(pgdata)
        durability = [] if not temporary else ["-c", "fsync=off", "-c", "full_page_writes=off"]

        def argv(port: int) -> list[str]:
            return [
                str(pginstall / "bin" / "postgres"),
                "-D", str(_OWN_CWD if via_cwd else pgdata),
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
            cwd=pgdata if via_cwd else None,
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
        self,
        bindir: Path,
        target: Path,
        base: Path,
        run_as: _RunAs | None,
        *,
        sync: bool,
        via_cwd: bool = False,
    ) -> None:
        """Create a cluster in ``target`` (which must not exist yet); ``via_cwd``: run in
        it and name it ``/proc/self/cwd`` (see :meth:`_start_postgres`)."""
        target.mkdir(mode=0o700)
        if run_as is not None:
            os.chown(target, run_as[0], run_as[1])
        argv = [
            str(bindir / "initdb"),
            "-D", str(_OWN_CWD if via_cwd else target),
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
        child = self._spawn(argv, base, "initdb", run_as=run_as, cwd=target if via_cwd else None)
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


def _pg_url(port: int, database: str) -> str:
    return f"postgresql://postgres@127.0.0.1:{port}/{database}"
