"""A Valkey Cluster (3 masters + 3 replicas) and a Sentinel set-up, for the cluster tests.

Both run the ``embedded`` extra's ``valkey-server`` on free loopback ports, each server
in its own directory under ``base`` (no persistence). Tests SIGKILL a server by its
process id and restart it on the same port and directory: a cluster node rejoins from
its ``nodes.conf`` (as a replica of whoever took over), a Sentinel-managed master comes
back and is turned into a replica by the Sentinels, like a crashed server would.
Everything is stopped by process id when the context manager exits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import attrs
import redis
from tests.clusters import free_port

from wis2l_core.dev._binaries import _valkey_binary

__all__ = ["ValkeyCluster", "ValkeyNode", "ValkeySentinel", "wait_for"]

_START_TIMEOUT = 20.0
SLOTS = 16384


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``check`` until it is true; raise ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(redis.RedisError, OSError):
            if check():
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout} s")
        time.sleep(0.05)


@attrs.define
class ValkeyNode:
    """One ``valkey-server`` process: its name, port, directory and process."""

    name: str
    port: int
    dir: Path
    args: list[str]
    bus_port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The process id while running."""
        return self.process.pid if self.running and self.process is not None else None

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self.process is not None and self.process.poll() is None

    def admin(self) -> redis.Redis:
        """A short-lived synchronous client for set-up and inspection."""
        return redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=2)

    def command(self, *args: Any) -> Any:
        """Run one command on this server and return its reply."""
        with self.admin() as r:
            return r.execute_command(*args)


def _replication(node: ValkeyNode) -> dict[str, Any]:
    """``INFO replication`` as a dict."""
    with node.admin() as r:
        return dict(r.info("replication"))


class _Servers:
    """Starting, killing and stopping ``valkey-server`` processes by pid."""

    nodes: list[ValkeyNode]

    def __init__(self, base: Path) -> None:
        self.base = base
        self.binary = str(_valkey_binary())
        self.nodes = []

    def _node(self, name: str, args: Sequence[str]) -> ValkeyNode:
        node = ValkeyNode(name, free_port(), self.base / name, list(args))
        node.dir.mkdir(parents=True, exist_ok=True)
        self.nodes.append(node)
        return node

    def start(self, node: ValkeyNode) -> None:
        """Start (or restart) ``node`` on its port and directory; wait until it answers."""
        log = open(node.dir / "server.log", "ab")  # noqa: SIM115 - the process owns it
        try:
            node.process = subprocess.Popen(
                [self.binary, *node.args],
                cwd=node.dir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()

        def answers() -> bool:
            if not node.running:
                raise RuntimeError(f"{node.name} exited; see {node.dir / 'server.log'}")
            return bool(node.command("PING"))

        wait_for(answers, _START_TIMEOUT, f"{node.name} up")

    def kill(self, node: ValkeyNode) -> None:
        """SIGKILL ``node`` (a crash: nothing is flushed or handed over)."""
        if node.process is not None and node.process.poll() is None:
            os.kill(node.process.pid, signal.SIGKILL)
            node.process.wait(10)

    def stop(self) -> None:
        """Kill every server this object started."""
        for node in self.nodes:
            self.kill(node)

    def __enter__(self) -> Self:
        try:
            self.up()
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

    def up(self) -> None:
        raise NotImplementedError


def _common(port: int) -> list[str]:
    return [
        "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--protected-mode", "no", "--logfile", "server.log",
    ]  # fmt: skip


class ValkeyCluster(_Servers):
    """``masters`` masters with one replica each, slots split evenly.

    Args:
        base: the directory for the servers' files.
        masters: how many masters (each gets one replica).
        node_timeout_ms: ``cluster-node-timeout``: how long a master may be unreachable
            before its replica takes over (low, so failovers take about a second or two).
    """

    def __init__(self, base: Path, masters: int = 3, node_timeout_ms: int = 1000) -> None:
        super().__init__(base)
        self.node_timeout_ms = node_timeout_ms
        for i in range(masters * 2):
            node = self._node(f"c{i}", [])
            node.bus_port = free_port()
            node.args = [
                *_common(node.port),
                "--cluster-enabled", "yes",
                # the bus port, given: the default (port + 10000) may be taken or too high
                "--cluster-port", str(node.bus_port),
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(node_timeout_ms),
                # a replica may always take over, however long it was cut off
                "--cluster-replica-validity-factor", "0",
            ]  # fmt: skip
        self.masters_count = masters

    @property
    def url(self) -> str:
        """``redis+cluster://`` naming every node as a seed."""
        return "redis+cluster://" + ",".join(n.address for n in self.nodes)

    def up(self) -> None:
        """Start the nodes, assign the slots, meet, attach replicas, wait for ``ok``."""
        for node in self.nodes:
            self.start(node)
        masters, replicas = self.nodes[: self.masters_count], self.nodes[self.masters_count :]
        step = SLOTS // len(masters)
        for i, node in enumerate(masters):
            last = SLOTS - 1 if i == len(masters) - 1 else (i + 1) * step - 1
            node.command("CLUSTER", "ADDSLOTSRANGE", i * step, last)
        for node in self.nodes[1:]:
            first = self.nodes[0]
            node.command("CLUSTER", "MEET", "127.0.0.1", first.port, first.bus_port)
        wait_for(
            lambda: all(len(self._known(n)) == len(self.nodes) for n in self.nodes),
            _START_TIMEOUT,
            "all nodes meeting",
        )
        for master, replica in zip(masters, replicas, strict=True):
            master_id = master.command("CLUSTER", "MYID").decode()
            wait_for(
                lambda r=replica, m=master_id: r.command("CLUSTER", "REPLICATE", m) is not None,
                _START_TIMEOUT,
                f"{replica.name} replicating",
            )
        self.wait_ok()
        wait_for(self.replicas_synced, _START_TIMEOUT, "replicas in sync")

    @staticmethod
    def _known(node: ValkeyNode) -> list[str]:
        return [line for line in node.command("CLUSTER", "NODES").decode().splitlines() if line]

    def replicas_synced(self) -> bool:
        """True when each running replica's link is up and there are ``masters`` masters."""
        roles = [_replication(n) for n in self.live()]
        if any(r["role"] == "slave" and r.get("master_link_status") != "up" for r in roles):
            return False
        return sum(r["role"] == "master" for r in roles) == self.masters_count

    def live(self) -> list[ValkeyNode]:
        """The nodes whose process runs."""
        return [n for n in self.nodes if n.running]

    def wait_ok(self, timeout: float = _START_TIMEOUT) -> None:
        """Wait until every running node says ``cluster_state:ok``."""
        wait_for(
            lambda: all(b"cluster_state:ok" in n.command("CLUSTER", "INFO") for n in self.live()),
            timeout,
            "cluster_state:ok on every live node",
        )

    def master_of(self, key: str | bytes) -> ValkeyNode:
        """The node currently serving ``key``'s slot as master (asked of a live node)."""
        probe = self.live()[0]
        slot = int(probe.command("CLUSTER", "KEYSLOT", key))
        for shard in probe.command("CLUSTER", "SLOTS"):
            start, end, master = shard[0], shard[1], shard[2]
            if start <= slot <= end:
                port = int(master[1])
                return next(n for n in self.nodes if n.port == port)
        raise LookupError(f"no master for slot {slot}")

    def replica_of(self, master: ValkeyNode) -> ValkeyNode:
        """A running replica of ``master``."""
        master_id = master.command("CLUSTER", "MYID").decode()
        for line in master.command("CLUSTER", "REPLICAS", master_id):
            port = int(line.decode().split()[1].split("@")[0].rsplit(":", 1)[1])
            return next(n for n in self.nodes if n.port == port)
        raise LookupError(f"{master.name} has no replica")

    def is_master(self, node: ValkeyNode) -> bool:
        """True when ``node`` answers ``ROLE`` as a master."""
        return bool(node.command("ROLE")[0] == b"master")


class ValkeySentinel(_Servers):
    """One master, one replica and three Sentinels watching them as ``master_name``.

    Args:
        base: the directory for the servers' files.
        down_after_ms: Sentinel's ``down-after-milliseconds`` (low: a fast failover).
        failover_timeout_ms: Sentinel's ``failover-timeout``.
    """

    def __init__(
        self,
        base: Path,
        master_name: str = "wis2l",
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
    ) -> None:
        super().__init__(base)
        self.master_name = master_name
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.master = self._node("m", [])
        self.master.args = _common(self.master.port)
        self.replica = self._node("r", [])
        self.replica.args = [
            *_common(self.replica.port), "--replicaof", "127.0.0.1", str(self.master.port),
        ]  # fmt: skip
        self.sentinels = [self._node(f"s{i}", []) for i in range(3)]

    @property
    def data_nodes(self) -> list[ValkeyNode]:
        """The master and the replica (whichever role each has now)."""
        return [self.master, self.replica]

    @property
    def url(self) -> str:
        """``redis+sentinel://`` naming the three Sentinels and the master's name."""
        hosts = ",".join(s.address for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.master_name}"

    def up(self) -> None:
        """Start master, replica and Sentinels; wait until the Sentinels see both."""
        self.start(self.master)
        self.start(self.replica)
        wait_for(
            lambda: _replication(self.replica).get("master_link_status") == "up",
            _START_TIMEOUT,
            "replica in sync",
        )
        for sentinel in self.sentinels:
            conf = sentinel.dir / "sentinel.conf"
            conf.write_text(
                f"port {sentinel.port}\nbind 127.0.0.1\nprotected-mode no\n"
                f"logfile server.log\ndir {sentinel.dir}\n"
                f"sentinel monitor {self.master_name} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {self.master_name} {self.down_after_ms}\n"
                f"sentinel failover-timeout {self.master_name} {self.failover_timeout_ms}\n"
                f"sentinel parallel-syncs {self.master_name} 1\n"
            )
            sentinel.args = [str(conf), "--sentinel"]
            self.start(sentinel)
        wait_for(
            lambda: all(self._sees_replica_and_peers(s) for s in self.sentinels),
            _START_TIMEOUT,
            "sentinels seeing the replica and each other",
        )

    def _sees_replica_and_peers(self, sentinel: ValkeyNode) -> bool:
        with sentinel.admin() as r:
            info = r.sentinel_master(self.master_name)
        return int(info["num-slaves"]) >= 1 and int(info["num-other-sentinels"]) >= 2

    def current_master(self) -> ValkeyNode:
        """The data node the Sentinels name as master now."""
        sentinel = next(s for s in self.sentinels if s.running)
        with sentinel.admin() as r:
            _host, port = r.sentinel_get_master_addr_by_name(self.master_name)
        return next(n for n in self.data_nodes if n.port == int(port))
