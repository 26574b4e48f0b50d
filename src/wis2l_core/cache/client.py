"""The Redis client the caches share: a bounded pool, retries, and a circuit breaker.

:class:`RedisClient` owns the redis-py client ``settings.redis_url`` names (see
:mod:`wis2l_core.cache._connect`): one ``redis.asyncio.Redis`` over a bounded pool
(:class:`~wis2l_core.cache._pool.BoundedPool`) for ``redis://``, ``rediss://`` and
``unix://``, a ``RedisCluster`` for ``redis+cluster://``, or Sentinel's ``master_for``
client for ``redis+sentinel://``. Every cache sends its commands through one
guard, :meth:`RedisClient.call` (or :meth:`~RedisClient.call_strict` for the services
that must not fail open): it checks the breaker, runs the command and reports what
happened. That is how they fail open: after a connection failure or a timeout the
breaker opens, calls skip Redis for ``breaker_seconds``, then one call probes it again.
The outage is logged once when it starts and once when it ends, never per call.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Concatenate, Final, ParamSpec, TypeVar, cast

import attrs
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import (
    ClusterDownError,
    MaxConnectionsError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from wis2l_core._outage import Outage
from wis2l_core.cache._connect import build
from wis2l_core.config import Settings, redact_url
from wis2l_core.errors import ServiceUnavailable
from wis2l_core.telemetry import _cache as telemetry

__all__ = ["REDIS_ERRORS", "LuaScript", "RedisClient"]

P = ParamSpec("P")
T = TypeVar("T")
D = TypeVar("D")

logger = logging.getLogger("wis2l_core.cache")

REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, RedisClusterException, OSError)
"""What a Redis call can raise besides cancellation (``OSError`` covers socket errors and
:class:`TimeoutError`; ``RedisClusterException`` a slot no master serves)."""

_CLUSTER_ERRORS: tuple[type[BaseException], ...] = (*REDIS_ERRORS, AttributeError)
"""What a call on ``RedisCluster`` can raise: see ``RedisClient.open`` for the
``AttributeError``."""

_OUTAGE_ERRORS = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    ClusterDownError,
    RedisClusterException,
)
"""Errors that mean Redis is down, slow or failing over (they open the breaker): a lost
connection, a timeout, ``CLUSTERDOWN``, a slot with no master. Any other ``RedisError``
is about one command or key and does not: ``WRONGTYPE``, ``OOM``, ``READONLY`` (a write
sent to a replica: its reads still work; Sentinel and cluster clients reconnect to the
new master on their own), or a burst over a cluster node's ``max_connections``
(``MaxConnectionsError``)."""

_ERROR_LOG_INTERVAL = 10.0


class _Strict:
    """The ``default`` of :meth:`RedisClient.call` that raises instead of failing open."""


_STRICT: Final = _Strict()


@attrs.frozen
class LuaScript:
    """A Lua script run with ``EVALSHA``, falling back to ``EVAL`` after a server restart.

    Attributes:
        text: the Lua source.
        name: what the script does, e.g. ``"tokens.acquire"``: its span is named
            ``EVALSHA <name>``.
        hit: for a script that looks a cached value up, tells a hit from a miss by its
            reply (the span's ``wis2l.cache.hit``); ``None`` for the others.
        sha: its SHA-1, computed once.
    """

    text: str
    name: str = attrs.field(default="script", kw_only=True)
    hit: Callable[[Any], bool] | None = attrs.field(default=None, kw_only=True, eq=False)
    sha: str = attrs.field(init=False)

    @sha.default
    def _sha(self) -> str:
        return hashlib.sha1(self.text.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, redis: Redis, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run the script; driver errors propagate (the caller decides how to fail)."""
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await redis.eval(self.text, len(keys), *keys, *args)


async def _role(server: Any) -> tuple[str, str]:
    """``ROLE`` of ``server`` (a client or a cluster node): the role and, for a replica,
    its master's address; ``("unknown", "")`` when the server refuses ``ROLE``."""
    try:
        reply = await server.execute_command("ROLE")
    except ResponseError:  # renamed or not allowed (some managed services): ping instead
        await server.execute_command("PING")
        return ("unknown", "")
    role = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
    role = {"slave": "replica"}.get(role, role)
    if role == "replica" and len(reply) >= 3:
        host = reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1])
        return (role, f"{host}:{reply[2]}")
    return (role, "")


def _address(redis: Redis) -> str:
    kwargs = redis.connection_pool.connection_kwargs
    if "path" in kwargs:
        return str(kwargs["path"])
    host = kwargs.get("host")
    if host is None:  # Sentinel: the pool knows the master it last connected to
        address = getattr(redis.connection_pool, "master_address", None)
        return f"{address[0]}:{address[1]}" if address else "the master"
    return f"{host}:{kwargs.get('port', 6379)}"


async def _drop_idle(redis: Redis) -> None:
    """Sentinel: close idle connections, so new ones ask the Sentinels for the master."""
    try:
        await redis.connection_pool.disconnect(inuse_connections=False)
    except REDIS_ERRORS as exc:
        logger.debug("error while dropping connections: %r", exc)


async def _reload_slots(cluster: RedisCluster) -> None:
    """Cluster: reload the slot map now, so that health checks alone (with no other
    traffic to hit a ``MOVED`` or a dead node) see a failover end."""
    try:
        await cluster.nodes_manager.initialize()
    except _CLUSTER_ERRORS as exc:
        logger.debug("could not reload the cluster's slot map: %r", exc)


def _cure(mode: str) -> str:
    return {
        "sentinel": "the Sentinels promote a master and the client reconnects to it",
        "cluster": "the client's slot map follows the failover",
    }.get(mode, "REDIS_URL names the master")


def _seconds(value: float) -> float | None:
    """redis-py reads a timeout of 0 as "none"; say so explicitly."""
    return value if value > 0 else None


@attrs.define(eq=False)
class RedisClient:
    """The connection to Redis that every cache service shares.

    Create it with the settings, then ``await open()`` (no I/O happens before). ``open()``
    does not connect: connections are made on first use, so a Redis that is down at start
    does not fail the app; the caches fail open until it comes back.

    Args:
        settings: ``redis_url``, ``redis_max_connections``, ``redis_socket_timeout``,
            ``redis_connect_timeout`` and ``namespace`` are read.
        breaker_seconds: how long to skip Redis after a connection failure or timeout
            before one call probes it again.
        retries: retries of a command after a connection error, with exponential
            backoff and jitter (a stale connection after a Redis restart reconnects).
        health_check_interval: seconds a pooled connection may idle before it is checked
            with a ``PING`` ahead of its next command.
    """

    _settings: Settings
    breaker_seconds: float = attrs.field(default=1.0, kw_only=True)
    retries: int = attrs.field(default=2, kw_only=True)
    health_check_interval: float = attrs.field(default=30.0, kw_only=True)
    _redis: Redis | None = attrs.field(default=None, init=False, repr=False)
    _sentinel: Sentinel | None = attrs.field(default=None, init=False, repr=False)
    _mode: str = attrs.field(default="standalone", init=False, repr=False)
    _errors: tuple[type[BaseException], ...] = attrs.field(
        default=REDIS_ERRORS, init=False, repr=False
    )
    _cold: asyncio.Lock | None = attrs.field(default=None, init=False, repr=False)
    _down_until: float = attrs.field(default=0.0, init=False, repr=False)
    _outage: Outage = attrs.field(
        default=attrs.Factory(lambda: Outage("redis", logger, keep_error=False)),
        init=False,
        repr=False,
    )
    _last_error_log: float = attrs.field(default=-_ERROR_LOG_INTERVAL, init=False, repr=False)

    @property
    def settings(self) -> Settings:
        """The settings this client was built from."""
        return self._settings

    @property
    def namespace(self) -> str:
        """The key prefix: keys are ``<namespace>:<service>:<key>``."""
        return self._settings.namespace

    @property
    def available(self) -> bool:
        """True when the client is open and the breaker is closed (the last call worked)."""
        return self._redis is not None and not self._outage.down

    @property
    def degraded(self) -> bool:
        """True during an outage: a call failed and none has succeeded since."""
        return self._outage.down

    @property
    def mode(self) -> str:
        """``"standalone"``, ``"cluster"`` or ``"sentinel"``, from the URL's scheme."""
        return self._mode

    @property
    def redis(self) -> Redis:
        """The underlying ``redis.asyncio.Redis``, for commands the services do not cover.

        In cluster mode this is a ``redis.asyncio.cluster.RedisCluster``: it has the same
        command methods and routes each by its key's slot.

        Raises:
            ServiceUnavailable: the client is not open.
        """
        if self._redis is None:
            raise ServiceUnavailable("the Redis client is not open", service="redis")
        return self._redis

    def key(self, service: str, key: str) -> str:
        """The full Redis key of ``key`` in ``service``: ``<namespace>:<service>:<key>``."""
        return f"{self._settings.namespace}:{service}:{key}"

    async def open(self) -> None:
        """Build the connection pool. Idempotent; makes no connection yet."""
        if self._redis is not None:
            return
        s = self._settings
        socket_timeout = _seconds(s.redis_socket_timeout)
        connect_timeout = _seconds(s.redis_connect_timeout)
        waits = [t for t in (socket_timeout, connect_timeout) if t is not None]
        built = build(
            s.redis_url,
            {
                "socket_timeout": socket_timeout,
                "socket_connect_timeout": connect_timeout,
                "retry": Retry(
                    ExponentialWithJitterBackoff(base=0.01, cap=0.2),
                    self.retries,
                    # Only connection errors are retried: a timeout already cost the budget.
                    supported_errors=(RedisConnectionError,),
                ),
                "health_check_interval": self.health_check_interval,
                "client_name": f"wis2l-core:{s.namespace}",
            },
            max_connections=s.redis_max_connections,
            # Waiting for a free connection counts against the same budget as a slow
            # server: past it the call is a miss, not a queue.
            timeout=max(waits) if waits else None,
        )
        # RedisCluster has Redis' command methods (the same mixins): the caches call them
        # as Redis.get(client, ...) on either.
        self._redis = cast("Redis", built.redis)
        self._sentinel = built.sentinel
        self._mode = built.mode
        if built.mode == "cluster":
            # redis-py 8.1's RedisCluster can hand a task a node connection that another
            # task's first slot-map load just closed: the command then fails with an
            # AttributeError (its writer is None) instead of a RedisError. Load the map
            # once before the first command (``_cold``), and treat that error like a lost
            # connection, so the caches still fail open if it recurs during a failover.
            self._errors = _CLUSTER_ERRORS
            self._cold = asyncio.Lock()
        logger.debug(
            "redis client open",
            extra={"redis_url": redact_url(s.redis_url), "redis_mode": built.mode},
        )

    async def aclose(self) -> None:
        """Close every pooled connection. Idempotent; the client can be opened again."""
        redis, self._redis = self._redis, None
        sentinel, self._sentinel = self._sentinel, None
        self._errors, self._cold = REDIS_ERRORS, None
        self._down_until = 0.0
        self._outage = Outage("redis", logger, keep_error=False)
        for closing in (redis, sentinel):
            if closing is None:
                continue
            try:
                await closing.aclose()
            except REDIS_ERRORS as exc:  # closing a dead connection is not a failure
                logger.debug("error while closing redis: %r", exc)

    async def ping(self) -> dict[str, Any]:
        """Check that Redis answers and takes writes, ignoring the breaker (health checks
        use this).

        Asks ``ROLE`` (of every master in cluster mode; a server that does not know
        ``ROLE`` gets a ``PING``): a server that answers as a replica cannot take the
        caches' writes, so it does not pass. In Sentinel mode the idle connections to it
        are dropped too, so the next ones ask the Sentinels for the new master.

        Returns:
            Details for the health report: ``mode`` and ``role`` (``"master"``, or
            ``"unknown"`` when ``ROLE`` is not allowed), and ``masters`` in cluster mode.

        Raises:
            ServiceUnavailable: the client is not open, Redis did not answer in time, or
                it answered as a read-only replica (the message says which server).
        """
        redis = self.redis
        try:
            if self._mode == "cluster":
                cluster = cast("RedisCluster", redis)
                await cluster.initialize()  # at once when the slot map is known
                nodes = cluster.get_primaries()
                roles = await asyncio.gather(*(_role(node) for node in nodes))
                servers = [node.name for node in nodes]
            else:
                roles = [await _role(redis)]
                servers = [_address(redis)]
        except self._errors as exc:
            self.report_failure(exc, op="ping")
            if self._mode == "cluster":  # a master died: learn who took over
                await _reload_slots(cast("RedisCluster", redis))
            raise ServiceUnavailable(f"redis did not answer: {exc}", service="redis") from exc
        if self._outage.down:
            self.report_success()
        for server, role in zip(servers, roles, strict=True):
            if role[0] not in ("master", "unknown"):
                if self._mode == "sentinel":
                    await _drop_idle(redis)
                elif self._mode == "cluster":
                    await _reload_slots(cast("RedisCluster", redis))
                upstream = f" of {role[1]}" if role[1] else ""
                raise ServiceUnavailable(
                    f"redis at {server} is a read-only {role[0]}{upstream}: writes fail "
                    f"until {_cure(self._mode)}",
                    service="redis",
                )
        details: dict[str, Any] = {"mode": self._mode, "role": roles[0][0]}
        if self._mode == "cluster":
            details["masters"] = len(roles)
        return details

    async def call(
        self,
        op: str,
        default: D,
        command: Callable[Concatenate[Redis, P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T | D:
        """Run ``command(redis, *args, **kwargs)`` behind the breaker, failing open.

        The one guard every cache calls: skip Redis while the breaker is open, run the
        command, report a failure (which opens the breaker, logged once per outage) or a
        success (which ends an outage). Cancellation is never caught, and a cancellation
        that redis-py swallowed is raised again.

        Args:
            op: what the call does, for the logs (``"get"``, ``"token lock"``).
            default: what to return when Redis is skipped or the command fails.
            command: an async callable taking the ``Redis`` first, e.g. ``Redis.get`` or
                a :class:`LuaScript`.
            *args: passed to ``command`` after the ``Redis``.
            **kwargs: passed to ``command``.

        Returns:
            The command's result, or ``default``.
        """
        if telemetry.observing() and type(command) is not telemetry.Probe:
            # An SDK records: the same guard runs again, inside a span, with the command
            # wrapped in a probe (which this test lets through).
            return cast(
                "T | D",
                await telemetry.observed_call(
                    self, self.call, op, default, command, *args, **kwargs
                ),
            )
        redis = self.guard()
        if redis is None:
            if default is _STRICT:
                raise ServiceUnavailable(
                    f"redis is unavailable, so {op} cannot run", service="redis"
                )
            return default
        task = asyncio.current_task()
        cancels = task.cancelling() if task is not None else 0
        try:
            if self._cold is not None:
                await self._warm_up()
            result = await command(redis, *args, **kwargs)
        except self._errors as exc:
            self.report_failure(exc, op=op)
            if default is _STRICT:
                raise ServiceUnavailable(f"redis {op} failed: {exc}", service="redis") from exc
            return default
        if self._outage.down:
            self.report_success()
        if task is not None and task.cancelling() > cancels:
            # On Python 3.11, asyncio.wait_for inside redis-py swallows a cancellation
            # that lands just as the reply arrives (gh-86296): the caller asked to stop,
            # so stop rather than return as if nothing happened.
            raise asyncio.CancelledError
        return result

    async def _warm_up(self) -> None:
        """Cluster mode: load the slot map once, before the first command."""
        lock = self._cold
        if lock is None:
            return
        async with lock:
            if self._cold is lock and self._redis is not None:
                await cast("RedisCluster", self._redis).initialize()
                self._cold = None

    async def call_strict(
        self,
        op: str,
        command: Callable[Concatenate[Redis, P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Like :meth:`call`, for services that must not fail open (sessions).

        Raises:
            ServiceUnavailable: the breaker is open, the client is not open, or the
                command failed (the driver error is the cause).
        """
        result: T = await self.call(op, cast("T", _STRICT), command, *args, **kwargs)
        return result

    def guard(self) -> Redis | None:
        """The Redis to send the next command to, or None to skip Redis.

        Prefer :meth:`call`, which also reports the outcome; this is the breaker check
        it makes.

        None when the client is not open or the breaker is open. Once ``breaker_seconds``
        have passed since the last failure, one caller gets through to probe and the rest
        keep skipping until it reports back. Cheap: one attribute test when healthy.
        """
        if self._down_until:
            now = time.monotonic()
            if now < self._down_until:
                return None
            self._down_until = now + self.breaker_seconds
        return self._redis

    def report_failure(self, exc: BaseException, *, op: str) -> None:
        """Record a failed call: open the breaker and log the outage once.

        Errors about a single command (``ResponseError``, such as ``WRONGTYPE`` or
        ``OOM``) do not open the breaker; they are logged at most every 10 s.
        """
        if not isinstance(exc, _OUTAGE_ERRORS) or isinstance(exc, MaxConnectionsError):
            now = time.monotonic()
            if now - self._last_error_log >= _ERROR_LOG_INTERVAL:
                self._last_error_log = now
                logger.warning("redis %s failed: %r", op, exc, extra={"op": op})
            if self._outage.down:  # Redis answered, so it is up
                self.report_success()
            return
        self._down_until = time.monotonic() + self.breaker_seconds
        if not self._outage.down:
            self._outage.failed(
                exc,
                "redis unavailable, caches fail open until it answers again: %r",
                exc,
                extra={"op": op, "redis_url": redact_url(self._settings.redis_url)},
            )

    def report_success(self) -> None:
        """Record a call that worked: close the breaker and log the end of an outage."""
        self._down_until = 0.0
        self._outage.recovered()
