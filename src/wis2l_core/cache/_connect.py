"""Building the redis-py client a ``REDIS_URL`` names: one server, a Cluster or Sentinel.

- ``redis://``, ``rediss://``, ``unix://``: one server, over :class:`BoundedPool`. Each
  new connection asks ``INFO cluster`` once; a server in cluster mode is refused with
  :class:`~wis2l_core.errors.ConfigError` (a plain URL on a cluster node would half-work:
  every key of another node's slots gets ``MOVED``).
- ``redis+cluster://host:port[,host:port...]`` (``rediss+cluster://`` for TLS): redis-py's
  ``RedisCluster`` with those seed nodes; it follows ``MOVED``/``ASK`` and refreshes its
  slot map after a failover.
- ``redis+sentinel://[[user]:password@]host:port[,host:port...]/<master name>[/db]``
  (``rediss+sentinel://`` for TLS to the data nodes): redis-py's ``Sentinel`` and its
  ``master_for`` client, which asks the Sentinels for the master on each new connection
  and drops a connection whose server turned into a replica. The password is the data
  nodes'; the Sentinels are asked without one.

Nothing here connects: the clients connect on first use.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import attrs
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError

from wis2l_core._urls import REDIS_CLUSTER_SCHEMES, REDIS_SENTINEL_SCHEMES
from wis2l_core.cache._pool import BoundedPool
from wis2l_core.errors import ConfigError

__all__ = ["Built", "build", "mode_of"]


@attrs.frozen
class Built:
    """What :func:`build` made.

    Attributes:
        redis: the client the caches send commands to (a ``RedisCluster`` in cluster
            mode: it has the same command methods).
        mode: ``"standalone"``, ``"cluster"`` or ``"sentinel"``.
        sentinel: the Sentinel manager in Sentinel mode (closed with the client).
    """

    redis: Redis | RedisCluster
    mode: str
    sentinel: Sentinel | None = None


def mode_of(url: str) -> str:
    """``"cluster"``, ``"sentinel"`` or ``"standalone"`` for a ``REDIS_URL``."""
    scheme = url.partition("://")[0].lower()
    if scheme in REDIS_CLUSTER_SCHEMES:
        return "cluster"
    if scheme in REDIS_SENTINEL_SCHEMES:
        return "sentinel"
    return "standalone"


def _hosts(netloc: str) -> list[tuple[str, int]]:
    hosts = []
    for item in netloc.rpartition("@")[2].split(","):
        host, _, port = item.rpartition(":")
        if not host:  # no port given
            host, port = item, "6379"
        hosts.append((host.strip("[]"), int(port)))
    return hosts


def _credentials(netloc: str) -> dict[str, Any]:
    userinfo, at, _ = netloc.rpartition("@")
    if not at:
        return {}
    user, colon, password = userinfo.partition(":")
    found: dict[str, Any] = {}
    if colon:
        found["password"] = unquote(password)
        if user:
            found["username"] = unquote(user)
    elif user:  # redis://secret@host: redis-py reads a lone userinfo as the password
        found["password"] = unquote(user)
    return found


async def _refuse_cluster_node(conn: AbstractConnection) -> None:
    """A plain URL's connection hook: the usual hand-shake, then refuse a cluster node."""
    await conn.on_connect()
    try:
        await conn.send_command("INFO", "cluster")
        info = await conn.read_response()
    except ResponseError:  # INFO renamed or not allowed: nothing to learn
        return
    text = info.decode() if isinstance(info, bytes) else str(info)
    if "cluster_enabled:1" in text:
        await conn.disconnect()
        raise ConfigError(
            f"REDIS_URL names a Redis Cluster node ({conn.host}:{conn.port}); a plain "  # type: ignore[attr-defined]
            "redis:// URL would reach only that node's slots. Use "
            "redis+cluster://host:port[,host:port...] instead",
            variable="REDIS_URL",
        )


def build(
    url: str, options: dict[str, Any], *, max_connections: int, timeout: float | None
) -> Built:
    """The client for ``url``.

    Args:
        url: the ``REDIS_URL`` (already checked by ``Settings``).
        options: connection options every mode takes (timeouts, ``retry``,
            ``health_check_interval``, ``client_name``).
        max_connections: the pool size (per node in cluster mode).
        timeout: how long a borrower waits for a free connection (one server only).
    """
    mode = mode_of(url)
    if mode == "standalone":
        pool = BoundedPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout,
            redis_connect_func=_refuse_cluster_node,
            **options,
        )
        return Built(Redis.from_pool(pool), mode)
    parts = urlsplit(url)
    tls = parts.scheme.lower().startswith("rediss")
    auth = _credentials(parts.netloc)
    path = [p for p in parts.path.split("/") if p]
    if mode == "cluster":
        cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in _hosts(parts.netloc)],
            # Keep serving the slots whose master is up while another shard fails over.
            require_full_coverage=False,
            max_connections=max_connections,
            ssl=tls,
            **auth,
            **options,
        )
        return Built(cluster, mode)
    sentinel = Sentinel(  # type: ignore[no-untyped-call,unused-ignore]
        _hosts(parts.netloc),
        sentinel_kwargs={
            **{k: v for k, v in options.items() if k.startswith("socket_")},
            # One try per Sentinel: the next Sentinel is the retry. redis-py's default
            # (3 retries with backoff, per Sentinel, per connection retry) made a call
            # with no Sentinel reachable take over 20 s instead of failing open.
            "retry": Retry(NoBackoff(), 0),
        },
    )
    master = sentinel.master_for(
        path[0],
        redis_class=Redis,
        db=int(path[1]) if len(path) > 1 else 0,
        max_connections=max_connections,
        ssl=tls,
        **auth,
        **options,
    )
    return Built(master, mode, sentinel)
