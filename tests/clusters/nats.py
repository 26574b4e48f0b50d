"""A 3-node NATS cluster with JetStream, for the cluster tests.

The nodes run the ``embedded`` extra's ``nats-server`` on free loopback ports (client and
route ports), each with its own store directory under ``base``. Tests kill a node with
SIGKILL by its process id and restart it on the same ports and store, so it rejoins and
catches up like a crashed server would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import attrs
import nats
from nats.js.api import StreamInfo
from tests.clusters import free_port

from wis2l_core.dev._binaries import _nats_binary

__all__ = ["NatsCluster", "NatsNode"]

_START_TIMEOUT = 20.0


@attrs.define
class NatsNode:
    """One server of the cluster: its name (as JetStream reports leaders), ports, process."""

    name: str
    port: int
    cluster_port: int
    store: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The client URL."""
        return f"nats://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The process id while running."""
        return self.process.pid if self.running and self.process is not None else None

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self.process is not None and self.process.poll() is None


class NatsCluster:
    """Three ``nats-server`` processes routed to each other, JetStream on each.

    Use as a context manager (``with NatsCluster(tmp_path) as cluster``); the nodes are
    stopped (SIGKILL by pid) when it exits.
    """

    def __init__(self, base: Path, size: int = 3, name: str = "wis2l") -> None:
        self.base = base
        self.name = name
        self.binary = str(_nats_binary())
        self.nodes = [
            NatsNode(
                name=f"n{i}",
                port=free_port(),
                cluster_port=free_port(),
                store=base / f"n{i}" / "store",
                log=base / f"n{i}" / "nats.log",
            )
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        """The client URLs of every node."""
        return [n.url for n in self.nodes]

    def node(self, name_or_url: str) -> NatsNode:
        """The node with this server name (``n0``) or client URL."""
        for node in self.nodes:
            if name_or_url in (node.name, node.url) or name_or_url.endswith(f":{node.port}"):
                return node
        raise KeyError(name_or_url)

    def __enter__(self) -> NatsCluster:
        try:
            for node in self.nodes:
                self.start(node)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _argv(self, node: NatsNode) -> list[str]:
        routes = ",".join(f"nats://127.0.0.1:{n.cluster_port}" for n in self.nodes)
        return [
            self.binary,
            "--addr", "127.0.0.1",
            "--port", str(node.port),
            "--server_name", node.name,
            "--jetstream",
            "--store_dir", str(node.store),
            "--cluster_name", self.name,
            "--cluster", f"nats://127.0.0.1:{node.cluster_port}",
            "--routes", routes,
            "--log", str(node.log),
        ]  # fmt: skip

    def start(self, node: NatsNode) -> None:
        """Start (or restart) ``node`` on its ports and store; wait until it accepts."""
        if node.running:
            return
        node.store.mkdir(parents=True, exist_ok=True)
        node.process = subprocess.Popen(
            self._argv(node), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            if node.process.poll() is not None:
                raise RuntimeError(f"nats-server {node.name} exited; see {node.log}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", node.port), timeout=0.5) as sock,
            ):
                if sock.recv(7).startswith(b"INFO"):
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"nats-server {node.name} did not start; see {node.log}")
            time.sleep(0.05)

    def kill(self, node: NatsNode) -> None:
        """SIGKILL ``node`` by its pid and reap it."""
        if node.process is None or not node.running:
            return
        os.kill(node.process.pid, signal.SIGKILL)
        node.process.wait(10)

    def stop(self) -> None:
        """Kill every node."""
        for node in self.nodes:
            self.kill(node)

    # -- JetStream views --------------------------------------------------------------------

    async def wait_jetstream(self, timeout: float = _START_TIMEOUT) -> None:
        """Wait until the cluster's JetStream answers (a meta leader is elected)."""
        deadline = time.monotonic() + timeout
        nc = await nats.connect(self.urls, connect_timeout=2, max_reconnect_attempts=-1)
        try:
            js = nc.jetstream(timeout=2)
            while True:
                try:
                    await js.account_info()
                    return
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
        finally:
            await nc.close()

    async def stream_info(self, stream: str, timeout: float = 10.0) -> StreamInfo:
        """The stream's info from any live node, retried while the cluster elects."""
        deadline = time.monotonic() + timeout
        urls = [n.url for n in self.nodes if n.running]
        nc = await nats.connect(urls, connect_timeout=2, max_reconnect_attempts=-1)
        try:
            js = nc.jetstream(timeout=2)
            while True:
                try:
                    info = await js.stream_info(stream)
                    if info.cluster is not None and info.cluster.leader:
                        return info
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                if time.monotonic() > deadline:
                    raise TimeoutError(f"stream {stream} has no leader")
                await asyncio.sleep(0.2)
        finally:
            await nc.close()

    async def stream_leader(self, stream: str) -> NatsNode:
        """The node that leads ``stream`` now."""
        info = await self.stream_info(stream)
        assert info.cluster is not None
        assert info.cluster.leader is not None
        return self.node(info.cluster.leader)

    async def move_leader(self, stream: str, away_from: NatsNode, timeout: float = 15.0) -> None:
        """Ask ``stream``'s leader to step down until ``away_from`` no longer leads it."""
        deadline = time.monotonic() + timeout
        nc = await nats.connect(self.urls, connect_timeout=2)
        try:
            while (await self.stream_leader(stream)) is away_from:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{away_from.name} still leads {stream}")
                with contextlib.suppress(Exception):
                    await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", b"", timeout=2)
                await asyncio.sleep(0.5)
        finally:
            await nc.close()

    async def stream_followers(self, stream: str) -> list[NatsNode]:
        """The nodes that hold a replica of ``stream`` but do not lead it."""
        info = await self.stream_info(stream)
        assert info.cluster is not None
        return [self.node(r.name) for r in info.cluster.replicas or []]
