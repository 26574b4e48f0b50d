"""``Wis2l``: the one object an app holds. It starts, checks and stops everything.

``start()`` opens PostgreSQL, then Redis, then NATS; ``stop()`` closes them in reverse.
Both are idempotent, and no I/O happens in the constructor.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from os import PathLike
from types import TracebackType
from typing import Any

from wis2l_core.config import Settings
from wis2l_core.db.builds import BuildRepository
from wis2l_core.db.components import ComponentRepository
from wis2l_core.db.deployments import DeploymentRepository
from wis2l_core.db.events import EventRepository
from wis2l_core.db.migrate import apply_migrations
from wis2l_core.db.pool import Connection, Database
from wis2l_core.db.projects import ProjectRepository
from wis2l_core.db.templates import TemplateRepository
from wis2l_core.db.tokens import TokenRepository
from wis2l_core.db.users import UserRepository
from wis2l_core.errors import ServiceUnavailable

__all__ = ["Repositories", "Transaction", "Wis2l"]

log = logging.getLogger("wis2l_core.runtime")


class Repositories:
    """The eight repositories, bound to the pool or to one transaction's connection."""

    def __init__(self, db: Database, conn: Connection | None = None) -> None:
        self.users = UserRepository(db, conn)
        """Users (identity)."""
        self.projects = ProjectRepository(db, conn)
        """Projects."""
        self.templates = TemplateRepository(db, conn)
        """Project templates (IGNITION)."""
        self.components = ComponentRepository(db, conn)
        """Generated components (SPARK)."""
        self.tokens = TokenRepository(db, conn)
        """Design tokens (SLATE)."""
        self.builds = BuildRepository(db, conn)
        """Builds (IGNIS)."""
        self.deployments = DeploymentRepository(db, conn)
        """Deployments (WAYPOINT)."""
        self.events = EventRepository(db, conn)
        """The audit log."""


class Transaction(Repositories):
    """The repositories bound to one database transaction (``async with wis.transaction()``).

    Everything done through it commits together or not at all; the events its writes
    record are published only after it commits.
    """


class Wis2l(Repositories):
    """The wis2l-core runtime: repositories, caches, the event bus, health and lifecycle.

    Args:
        settings: where the servers are; ``Settings.from_env()`` when omitted.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings if settings is not None else Settings.from_env()
        self._db = Database(self.settings)
        super().__init__(self._db)
        self._started = False

    @property
    def database(self) -> Database:
        """The PostgreSQL pool wrapper (for advanced use: raw queries on the pool)."""
        return self._db

    async def start(self) -> None:
        """Open the pool, Redis and NATS. Calling it again does nothing.

        Raises:
            ServiceUnavailable: the database cannot be reached.
        """
        if self._started:
            return
        await self._db.open(wait=True)
        self._started = True
        log.info("wis2l-core started", extra={"environment": self.settings.environment.value})

    async def stop(self) -> None:
        """Close everything ``start()`` opened, in reverse order. Idempotent."""
        if not self._started:
            return
        self._started = False
        await self._db.close()
        log.info("wis2l-core stopped")

    async def __aenter__(self) -> Wis2l:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def migrate(self) -> list[str]:
        """Apply pending migrations (as ``wis2l db migrate``); return the names applied."""
        return await apply_migrations(
            self.settings.database_url,
            lock_timeout=self.settings.migrate_lock_timeout,
            connect_timeout=self.settings.db_connect_timeout,
        )

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """Bind the repositories to one transaction: all or nothing.

        Raises:
            ServiceUnavailable: the database cannot be reached.
        """
        async with self._db.connection() as conn:
            try:
                async with conn.transaction():
                    yield Transaction(self._db, conn)
            except Exception as exc:
                if type(exc).__module__.startswith("psycopg"):
                    from wis2l_core.db.errors import translate

                    raise translate(exc) from exc
                raise

    @classmethod
    @asynccontextmanager
    async def embedded(
        cls, data_dir: str | PathLike[str] | None = None, **overrides: Any
    ) -> AsyncIterator[Wis2l]:
        """Start an embedded PostgreSQL, Valkey and NATS, migrate, and yield a started runtime.

        Leaving the block stops the runtime and the servers. Needs the ``embedded`` extra.

        Args:
            data_dir: keep the servers' data here between runs; a temporary directory
                (removed at the end) when omitted.
            overrides: :class:`Settings` fields to change, e.g. ``namespace="demo"``.
        """
        import asyncio

        try:
            from wis2l_core.dev import EmbeddedStack
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ServiceUnavailable(
                "Wis2l.embedded() needs the embedded extra: pip install 'wis2l-core[embedded]'",
                service="database",
            ) from exc
        stack = EmbeddedStack(data_dir)
        await asyncio.to_thread(stack.start)
        try:
            runtime = cls(stack.settings(**overrides))
            await runtime.migrate()
            async with runtime:
                yield runtime
        finally:
            await asyncio.to_thread(stack.stop)
