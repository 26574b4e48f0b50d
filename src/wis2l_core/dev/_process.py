"""Child processes that die with us, and the probes that tell when a server answers."""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import functools
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg

_log = logging.getLogger("wis2l_core.dev")
_STOP_GRACE = 10.0


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


def _summary(exc: BaseException) -> str:
    if isinstance(exc, _ServerError):
        return exc.summary
    return (str(exc).splitlines() or [type(exc).__name__])[0]


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
