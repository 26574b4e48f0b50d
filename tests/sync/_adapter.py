"""Re-collect the asynchronous test modules against ``wis2l_core.sync``.

A test module of the asynchronous API (``tests/test_users.py``, ...) is executed again
as a module of this package, unchanged, except that what it tests is the synchronous API:

- its ``wis`` fixture (tests/sync/conftest.py) is a started :class:`wis2l_core.sync.Wis2l`
  seen through :class:`Async`, which runs each synchronous call in a worker thread
  (``asyncio.to_thread``) and hands the result back to the test's ``await``;
- the cache classes it builds itself (``Cache(client, ...)``, ``SessionStore``, ...) are
  the generated synchronous ones, through :func:`adapt`, and ``client`` is the
  synchronous ``RedisClient``.

So every ``await wis.users.create(...)`` runs the generated ``UserRepository.create`` on
psycopg's synchronous pool, and an ``asyncio.gather`` of calls runs them at once in
several threads: the races the asynchronous tests check are real races here too. What
only makes sense for asyncio (cancelling a task mid-call, the async pool's internals)
is left out by name, with the reason, in each module's ``SKIP``.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import importlib
import inspect
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import Any

import attrs
import pytest

TESTS = Path(__file__).resolve().parents[1]

_PASSIVE = (str, bytes, int, float, bool, type(None), list, tuple, dict, set, frozenset)
_PASSIVE += (enum.Enum, type, BaseException)
_ACTIVE_MODULES = ("wis2l_core.sync", "psycopg", "psycopg_pool", "redis", "contextlib")


def _active(value: object) -> bool:
    """Whether ``value`` is a service to wrap (its methods do I/O), not data to hand back."""
    if isinstance(value, _PASSIVE):
        return False
    cls = type(value)
    if attrs.has(cls) and getattr(cls.__setattr__, "__name__", "") == "_frozen_setattrs":
        return False  # a frozen attrs class is a value: a model, a Session, a RateLimit
    return cls.__module__.startswith(_ACTIVE_MODULES) or isinstance(value, AbstractContextManager)


_SYNC_NAMES = {"aclose": "close", "__aenter__": "__enter__", "__aexit__": "__exit__"}
"""The asynchronous API's names of synchronous methods (as tools/async_to_sync.py renames)."""

_TWINS = {
    "wis2l_core.sync._runtime.Wis2l": "wis2l_core.runtime.Wis2l",
    "wis2l_core.sync._runtime.SyncBus": "wis2l_core.events.bus.EventBus",
    "wis2l_core.sync._pool.Database": "wis2l_core.db.pool.Database",
    "wis2l_core.sync._redis.RedisClient": "wis2l_core.cache.client.RedisClient",
    "psycopg.Connection": "psycopg.AsyncConnection",
    "psycopg.Cursor": "psycopg.AsyncCursor",
    "psycopg_pool.pool.ConnectionPool": "psycopg_pool.pool_async.AsyncConnectionPool",
}


@functools.cache
def _twin(cls: type) -> type | None:
    """The asynchronous class ``cls`` was generated from (or mirrors), if known."""
    name = f"{cls.__module__}.{cls.__qualname__}"
    if name in _TWINS:
        module, _, attr = _TWINS[name].rpartition(".")
    elif cls.__module__.startswith(("wis2l_core.sync.db.", "wis2l_core.sync.cache.")):
        module, attr = cls.__module__.replace("wis2l_core.sync.", "wis2l_core."), cls.__name__
    else:
        return None
    twin: type = getattr(importlib.import_module(module), attr)
    return twin


def _awaited(target: object, name: str) -> bool:
    """Whether the asynchronous API awaits (or ``async with``s) ``target.<name>()``; a
    method without a known twin (redis-py's commands) is taken to be awaited."""
    twin = _twin(type(target))
    method = getattr(twin, name, None) if twin is not None else None
    if method is None:
        return True
    wrapped = getattr(method, "__wrapped__", None)
    return inspect.iscoroutinefunction(method) or inspect.isasyncgenfunction(wrapped)


def wrap(value: Any) -> Any:
    """``value`` as the asynchronous test expects it: services wrapped, data as is."""
    return Async(value) if _active(value) else value


def unwrap(value: Any) -> Any:
    return value._target if isinstance(value, Async) else value


class _Call:
    """A call on the synchronous API, awaited (run in a thread) or entered with
    ``async with`` (a context manager entered and left in threads)."""

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]):
        self._fn = fn
        self._args = tuple(unwrap(a) for a in args)
        self._kwargs = {k: unwrap(v) for k, v in kwargs.items()}
        self._cm: Any = None

    def __await__(self) -> Any:
        async def run() -> Any:
            return wrap(await asyncio.to_thread(self._fn, *self._args, **self._kwargs))

        return run().__await__()

    async def __aenter__(self) -> Any:
        self._cm = self._fn(*self._args, **self._kwargs)
        return wrap(await asyncio.to_thread(self._cm.__enter__))

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> bool:
        return bool(await asyncio.to_thread(self._cm.__exit__, t, e, tb))

    def __aiter__(self) -> Any:
        iterator: Iterator[Any] = iter(self._fn(*self._args, **self._kwargs))
        done = object()

        async def agen() -> Any:
            while (item := await asyncio.to_thread(next, iterator, done)) is not done:
                yield wrap(item)

        return agen()


class Async:
    """A synchronous object seen as its asynchronous twin: methods are awaited."""

    def __init__(self, target: Any) -> None:
        object.__setattr__(self, "_target", target)

    def __getattr__(self, name: str) -> Any:
        name = _SYNC_NAMES.get(name, name)
        value = getattr(self._target, name)
        if callable(value) and not isinstance(value, type) and not _active(value):
            if _awaited(self._target, name):
                return lambda *args, **kwargs: _Call(value, args, kwargs)
            return lambda *args, **kwargs: wrap(value(*map(unwrap, args), **kwargs))
        return wrap(value)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target, name, unwrap(value))

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # isinstance(proxy, SyncClass) holds
        return type(self._target)

    def __repr__(self) -> str:
        return f"Async({self._target!r})"

    def __eq__(self, other: object) -> bool:
        return bool(self._target == unwrap(other))

    def __hash__(self) -> int:
        return hash(self._target)

    async def __aenter__(self) -> Any:
        return wrap(await asyncio.to_thread(self._target.__enter__))

    async def __aexit__(self, *exc: Any) -> bool:
        return bool(await asyncio.to_thread(self._target.__exit__, *exc))


def adapt(cls: type) -> Callable[..., Async]:
    """A synchronous class built from (possibly wrapped) arguments, returned wrapped."""

    @functools.wraps(cls)
    def build(*args: Any, **kwargs: Any) -> Async:
        return Async(cls(*(unwrap(a) for a in args), **{k: unwrap(v) for k, v in kwargs.items()}))

    return build


def recollect(
    namespace: dict[str, Any],
    module: str,
    *,
    replace: dict[str, Any] | None = None,
    skip: dict[str, str] | None = None,
    only: tuple[str, ...] = (),
) -> None:
    """Run ``tests/<module>.py`` into ``namespace`` (the calling test module's globals).

    Args:
        namespace: the re-collecting module's ``globals()``.
        module: the asynchronous test module's name.
        replace: globals of that module to replace after it ran (its cache classes by
            their synchronous twins).
        skip: test name -> why it does not apply to the synchronous API.
        only: keep only these tests (the module's other tests are about the
            asynchronous machinery itself).
    """
    path = TESTS / f"{module}.py"
    source = path.read_text()
    keep = {k: namespace[k] for k in ("__name__", "__file__", "__doc__") if k in namespace}
    exec(compile(source, str(path), "exec"), namespace)
    namespace.update(keep)
    namespace.update(replace or {})
    if only:
        for name in [n for n in namespace if n.startswith("test_") and n not in only]:
            del namespace[name]
        missing = set(only) - set(namespace)
        if missing:
            raise AssertionError(f"{module}: no such tests {sorted(missing)} (renamed?)")
    for name, reason in (skip or {}).items():
        if name not in namespace:
            raise AssertionError(f"{module}.{name}: no such test to skip (renamed?)")
        namespace[name] = pytest.mark.skip(reason=f"async only: {reason}")(namespace[name])
