"""The eight repositories together: bound to the pool (``wis``) or to one transaction (``tx``).

:class:`Repositories` is what :class:`~wis2l_core.Wis2l` and :class:`Transaction` share; it
lives beside the repositories so that nothing in ``db`` imports the runtime.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from wis2l_core.db.builds import BuildRepository
from wis2l_core.db.components import ComponentRepository
from wis2l_core.db.deployments import DeploymentRepository
from wis2l_core.db.events import EventRepository
from wis2l_core.db.pool import Connection, Database
from wis2l_core.db.projects import ProjectRepository
from wis2l_core.db.queries import QueryMethods, Statement
from wis2l_core.db.templates import TemplateRepository
from wis2l_core.db.tokens import TokenRepository
from wis2l_core.db.users import UserRepository
from wis2l_core.errors import Wis2lError

__all__ = ["Repositories", "Transaction"]


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


class Transaction(Repositories, QueryMethods):
    """The repositories bound to one database transaction (``async with wis.transaction()``).

    Everything done through it commits together or not at all; the events its writes
    record reach JetStream only after it commits (the outbox relay publishes them).
    Your own SQL joins the same transaction through :meth:`fetch_one`, :meth:`fetch_all`,
    :meth:`fetch_val` and :meth:`execute` (see
    :class:`~wis2l_core.db.queries.QueryMethods`), or :attr:`connection` for anything
    else psycopg offers. None of it may be used after the ``async with`` block.
    """

    def __init__(self, db: Database, conn: Connection) -> None:
        super().__init__(db, conn)
        self._db = db
        self._conn: Connection | None = conn

    @property
    def connection(self) -> Connection:
        """The transaction's psycopg connection (rows are dicts), for full psycopg access.

        Run statements on it freely (cursors, ``COPY``, savepoints with
        ``conn.transaction()``); do not commit, roll back or close it: the transaction
        does that. Errors raised on it inside the block become wis2l-core errors when
        they leave the block.

        Raises:
            Wis2lError: the transaction has ended.
        """
        if self._conn is None:
            raise Wis2lError("this transaction has ended: use it inside its `async with` block")
        return self._conn

    def _end(self) -> None:
        """Called by ``wis.transaction()`` as the block ends: no more SQL through ``self``."""
        self._conn = None

    def _borrow(self) -> AbstractAsyncContextManager[Connection]:
        return self._db.connection(self.connection)

    def log_query(self, query: Statement, start: float, count: int = 1) -> None:
        """Log like :meth:`Database.log_query <wis2l_core.db.pool.Database.log_query>`."""
        self._db.log_query(query, start, count)
