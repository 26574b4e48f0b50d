"""Finding the servers for a test session, and fresh per-test databases on them.

The servers named by ``WIS2L_TEST_DATABASE_URL``, ``WIS2L_TEST_REDIS_URL`` and
``WIS2L_TEST_NATS_URL`` are used when all three are set; otherwise an embedded stack is
started once for the session (the ``embedded`` extra) and stopped at its end.
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import attrs
import psycopg
from psycopg import sql

from wis2l_core.db.migrate import apply_migrations
from wis2l_core.errors import ValidationError

__all__ = ["Servers", "TemplateDatabase", "find_servers", "with_database"]

ENV_VARS = ("WIS2L_TEST_DATABASE_URL", "WIS2L_TEST_REDIS_URL", "WIS2L_TEST_NATS_URL")


@attrs.frozen
class Servers:
    """Where the test servers are.

    Attributes:
        database_url: a URL on the PostgreSQL server; its database is used for admin work.
        redis_url: the Redis (or Valkey) server.
        nats_url: the NATS server (JetStream enabled).
        embedded: True when the suite started these servers itself (so tests may stop and
            restart them).
    """

    database_url: str
    redis_url: str
    nats_url: str
    embedded: bool


@contextmanager
def find_servers() -> Iterator[Servers]:
    """Yield the environment's servers, or start (and finally stop) an embedded stack."""
    urls = [os.environ.get(v, "").strip() for v in ENV_VARS]
    if all(urls):
        yield Servers(database_url=urls[0], redis_url=urls[1], nats_url=urls[2], embedded=False)
        return
    from wis2l_core.dev import EmbeddedStack

    with EmbeddedStack() as stack:
        yield Servers(
            database_url=stack.database_url,
            redis_url=stack.redis_url,
            nats_url=stack.nats_url,
            embedded=True,
        )


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` instead (percent-encoded, so any name works)."""
    parts = urlsplit(url)
    path = "/" + quote(name, safe="")
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


_CLONE = re.compile(r"wis2l_t_[0-9a-f]{12}")
"""The names :meth:`TemplateDatabase.clone` gives; ``drop()`` drops nothing else."""


@attrs.define
class TemplateDatabase:
    """A migrated template database from which each test's database is cloned.

    ``CREATE DATABASE ... TEMPLATE`` copies files, so a fresh, migrated, empty database
    costs one statement instead of running every migration again. That statement still
    takes about half a second (the server writes and syncs the copy), so a thread makes
    ``spares`` clones ahead while the tests run, and :meth:`clone` hands one over at once.
    """

    server_url: str
    name: str = attrs.field(factory=lambda: f"wis2l_tpl_{secrets.token_hex(4)}")
    spares: int = 2
    """Clones made ahead in the background (0: each made when asked)."""
    _tag: str = attrs.field(factory=lambda: secrets.token_hex(2), init=False)
    _ready: queue.SimpleQueue[str] = attrs.field(factory=queue.SimpleQueue, init=False)
    _wanted: threading.Semaphore = attrs.field(init=False)
    _closing: threading.Event = attrs.field(factory=threading.Event, init=False)
    _filler: threading.Thread | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        self._wanted = threading.Semaphore(self.spares)

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(with_database(self.server_url, "postgres"), autocommit=True)

    def create(self) -> None:
        """Create the template, apply every migration to it, start making spares."""
        with self._admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        asyncio.run(apply_migrations(with_database(self.server_url, self.name)))
        if self.spares > 0:
            self._filler = threading.Thread(
                target=self._fill, name="wis2l-test-clones", daemon=True
            )
            self._filler.start()

    def _fill(self) -> None:
        while True:
            self._wanted.acquire()
            if self._closing.is_set():
                return
            try:
                self._ready.put(self._make())
            except psycopg.Error:  # the server went away: clone() makes its own
                return

    @property
    def clone_prefix(self) -> str:
        """How the names of this template's clones begin (``wis2l_t_`` and 4 hex digits)."""
        return f"wis2l_t_{self._tag}"

    def _make(self) -> str:
        name = f"{self.clone_prefix}{secrets.token_hex(4)}"  # matches _CLONE
        with self._admin() as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(self.name)
                )
            )
        return with_database(self.server_url, name)

    def clone(self) -> str:
        """A fresh database from the template (a spare when one is ready); its URL."""
        try:
            url = self._ready.get_nowait()
        except queue.Empty:
            return self._make()
        self._wanted.release()  # make the next spare
        return url

    def _stop_filling(self) -> None:
        """Stop the thread (after the clone it is making) and drop the unused spares."""
        self._closing.set()
        self._wanted.release()
        if self._filler is not None:
            self._filler.join(60)
            self._filler = None
        while True:
            try:
                spare = self._ready.get_nowait()
            except queue.Empty:
                return
            self.drop(spare)

    def drop(self, url: str | None = None) -> None:
        """Drop a clone (by URL), or the template itself when ``url`` is ``None`` (its
        unused spares too).

        Raises:
            ValidationError: ``url`` names a database :meth:`clone` did not make (so a
                wrong URL cannot drop the server's other databases).
        """
        if url is None:
            self._stop_filling()
        name = self.name if url is None else unquote(urlsplit(url).path.lstrip("/"))
        if url is not None and not _CLONE.fullmatch(name):
            raise ValidationError(f"{name!r} is not a clone of the template; not dropping it")
        with self._admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
