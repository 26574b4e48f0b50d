"""The synchronous Redis client the generated caches share: redis-py's ``redis.Redis``.

The same policy as :class:`wis2l_core.cache.client.RedisClient`, over the synchronous
client: a bounded pool (a borrower waits up to the socket timeout for a free
connection), retries of a lost connection, and one guard, :meth:`RedisClient.call`,
through which every cache fails open. After a connection failure or a timeout the breaker
opens: calls skip Redis for ``breaker_seconds``, then one call probes it again; the
outage is logged once when it starts and once when it ends. Sessions use
:meth:`~RedisClient.call_strict`, which raises ``ServiceUnavailable`` instead.

``REDIS_URL`` may name one server (``redis://``, ``rediss://``, ``unix://``), a Redis
Cluster (``redis+cluster://``) or Sentinel (``redis+sentinel://``), as for the
asynchronous client.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Concatenate, Final, ParamSpec, TypeVar, cast
from urllib.parse import urlsplit

import attrs
from redis import BlockingConnectionPool, Redis
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.retry import Retry
from redis.sentinel import Sentinel

from wis2l_core._outage import Outage
from wis2l_core.cache._connect import _credentials, _hosts, mode_of
from wis2l_core.cache.client import _OUTAGE_ERRORS, REDIS_ERRORS
from wis2l_core.config import Settings, redact_url
from wis2l_core.errors import ServiceUnavailable

__all__ = ["LuaScript", "RedisClient"]

P = ParamSpec("P")
T = TypeVar("T")
D = TypeVar("D")

logger = logging.getLogger("wis2l_core.cache")

_ERROR_LOG_INTERVAL = 10.0


class _Strict:
    """The ``default`` of :meth:`RedisClient.call` that raises instead of failing open."""


_STRICT: Final = _Strict()


@attrs.frozen
class LuaScript:
    """A Lua script run with ``EVALSHA``, falling back to ``EVAL`` after a server restart."""

    text: str
    name: str = attrs.field(default="script", kw_only=True)
    """What the script does (the asynchronous client names its span with it)."""
    hit: Callable[[Any], bool] | None = attrs.field(default=None, kw_only=True, eq=False)
    """Tells a cache hit from a miss by the reply (used by the asynchronous client)."""
    sha: str = attrs.field(init=False)

    @sha.default
    def _sha(self) -> str:
        return hashlib.sha1(self.text.encode(), usedforsecurity=False).hexdigest()

    def __call__(self, redis: Redis, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run the script; driver errors propagate (the caller decides how to fail)."""
        try:
            return redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return redis.eval(self.text, len(keys), *keys, *args)


def _seconds(value: float) -> float | None:
    return value if value > 0 else None


def _build(settings: Settings, options: dict[str, Any]) -> tuple[Redis, Sentinel | None, str]:
    url = settings.redis_url
    mode = mode_of(url)
    if mode == "standalone":
        waits = [t for t in (options["socket_timeout"], options["socket_connect_timeout"]) if t]
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=settings.redis_max_connections,
            timeout=max(waits) if waits else None,
            **options,
        )
        return Redis(connection_pool=pool), None, mode
    parts = urlsplit(url)
    tls = parts.scheme.lower().startswith("rediss")
    auth = _credentials(parts.netloc)
    if mode == "cluster":
        cluster = RedisCluster(
            startup_nodes=[
                ClusterNode(host, port)  # type: ignore[no-untyped-call]
                for host, port in _hosts(parts.netloc)
            ],
            require_full_coverage=False,
            max_connections=settings.redis_max_connections,
            ssl=tls,
            **auth,
            **options,
        )
        return cast("Redis", cluster), None, mode
    path = [p for p in parts.path.split("/") if p]
    sentinel = Sentinel(
        _hosts(parts.netloc),
        sentinel_kwargs={
            **{k: v for k, v in options.items() if k.startswith("socket_")},
            "retry": Retry(NoBackoff(), 0),
        },
    )
    master = sentinel.master_for(
        path[0],
        redis_class=Redis,
        db=int(path[1]) if len(path) > 1 else 0,
        max_connections=settings.redis_max_connections,
        ssl=tls,
        **auth,
        **options,
    )
    return master, sentinel, mode


@attrs.define(eq=False)
class RedisClient:
    """The synchronous connection to Redis every cache of :class:`wis2l_core.sync.Wis2l` shares.

    Thread-safe: redis-py's pool hands each thread its own connection, and the breaker's
    state is a couple of floats.

    Args:
        settings: ``redis_url``, ``redis_max_connections``, ``redis_socket_timeout``,
            ``redis_connect_timeout`` and ``namespace`` are read.
        breaker_seconds: how long to skip Redis after a connection failure or timeout.
        retries: retries of a command after a connection error.
    """

    _settings: Settings
    breaker_seconds: float = attrs.field(default=1.0, kw_only=True)
    retries: int = attrs.field(default=2, kw_only=True)
    _redis: Redis | None = attrs.field(default=None, init=False, repr=False)
    _sentinel: Sentinel | None = attrs.field(default=None, init=False, repr=False)
    _mode: str = attrs.field(default="standalone", init=False, repr=False)
    _down_until: float = attrs.field(default=0.0, init=False, repr=False)
    _outage: Outage = attrs.field(
        default=attrs.Factory(lambda: Outage("redis", logger, keep_error=False)),
        init=False,
        repr=False,
    )
    _last_error_log: float = attrs.field(default=-_ERROR_LOG_INTERVAL, init=False, repr=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)

    @property
    def namespace(self) -> str:
        """The key prefix: keys are ``<namespace>:<service>:<key>``."""
        return self._settings.namespace

    @property
    def mode(self) -> str:
        """``"standalone"``, ``"cluster"`` or ``"sentinel"``."""
        return self._mode

    @property
    def available(self) -> bool:
        """True when the client is open and the breaker is closed."""
        return self._redis is not None and not self._outage.down

    @property
    def redis(self) -> Redis:
        """The underlying ``redis.Redis`` (a ``RedisCluster`` in cluster mode).

        Raises:
            ServiceUnavailable: the client is not open.
        """
        if self._redis is None:
            raise ServiceUnavailable("the Redis client is not open", service="redis")
        return self._redis

    def key(self, service: str, key: str) -> str:
        """The full Redis key of ``key`` in ``service``: ``<namespace>:<service>:<key>``."""
        return f"{self._settings.namespace}:{service}:{key}"

    def open(self) -> None:
        """Build the connection pool. Idempotent; makes no connection yet."""
        with self._lock:
            if self._redis is not None:
                return
            s = self._settings
            options = {
                "socket_timeout": _seconds(s.redis_socket_timeout),
                "socket_connect_timeout": _seconds(s.redis_connect_timeout),
                "retry": Retry(
                    ExponentialWithJitterBackoff(base=0.01, cap=0.2),
                    self.retries,
                    supported_errors=(RedisConnectionError,),
                ),
                "health_check_interval": 30,
                "client_name": f"wis2l-core-sync:{s.namespace}",
            }
            self._redis, self._sentinel, self._mode = _build(s, options)

    def close(self) -> None:
        """Close every pooled connection. Idempotent; the client can be opened again."""
        with self._lock:
            redis, self._redis = self._redis, None
            sentinel, self._sentinel = self._sentinel, None
            self._down_until = 0.0
            self._outage = Outage("redis", logger, keep_error=False)
        for closing in (redis, *(() if sentinel is None else sentinel.sentinels)):
            if closing is None:
                continue
            try:
                closing.close()
            except REDIS_ERRORS as exc:  # closing a dead connection is not a failure
                logger.debug("error while closing redis: %r", exc)

    def ping(self) -> dict[str, Any]:
        """Check that Redis answers (``PING``), ignoring the breaker (health checks use it).

        Raises:
            ServiceUnavailable: the client is not open or Redis did not answer.
        """
        redis = self.redis
        try:
            redis.ping()
        except REDIS_ERRORS as exc:
            self.report_failure(exc, op="ping")
            raise ServiceUnavailable(f"redis did not answer: {exc}", service="redis") from exc
        if self._outage.down:
            self.report_success()
        return {"mode": self._mode}

    def call(
        self,
        op: str,
        default: D,
        command: Callable[Concatenate[Redis, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T | D:
        """Run ``command(redis, *args, **kwargs)`` behind the breaker, failing open.

        Returns:
            The command's result, or ``default`` when Redis is skipped or the call failed.
        """
        redis = self.guard()
        if redis is None:
            if default is _STRICT:
                raise ServiceUnavailable(
                    f"redis is unavailable, so {op} cannot run", service="redis"
                )
            return default
        try:
            result = command(redis, *args, **kwargs)
        except REDIS_ERRORS as exc:
            self.report_failure(exc, op=op)
            if default is _STRICT:
                raise ServiceUnavailable(f"redis {op} failed: {exc}", service="redis") from exc
            return default
        if self._outage.down:
            self.report_success()
        return result

    def call_strict(
        self,
        op: str,
        command: Callable[Concatenate[Redis, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Like :meth:`call`, for services that must not fail open (sessions).

        Raises:
            ServiceUnavailable: the breaker is open, the client is not open, or the
                command failed (the driver error is the cause).
        """
        result: T = self.call(op, cast("T", _STRICT), command, *args, **kwargs)
        return result

    def guard(self) -> Redis | None:
        """The Redis to send the next command to, or None to skip Redis (breaker open)."""
        if self._down_until:
            with self._lock:
                now = time.monotonic()
                if now < self._down_until:
                    return None
                self._down_until = now + self.breaker_seconds  # this caller probes
        return self._redis

    def report_failure(self, exc: BaseException, *, op: str) -> None:
        """Record a failed call: open the breaker and log the outage once."""
        if not isinstance(exc, _OUTAGE_ERRORS):
            now = time.monotonic()
            if now - self._last_error_log >= _ERROR_LOG_INTERVAL:
                self._last_error_log = now
                logger.warning("redis %s failed: %r", op, exc, extra={"op": op})
            if self._outage.down and isinstance(exc, ResponseError):
                self.report_success()
            return
        with self._lock:
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
        with self._lock:
            self._down_until = 0.0
            self._outage.recovered()
