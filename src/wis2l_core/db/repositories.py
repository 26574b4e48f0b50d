"""The eight repositories together: bound to the pool (``wis``) or to one transaction (``tx``).

:class:`Repositories` is what :class:`~wis2l_core.Wis2l` and :class:`Transaction` share; it
lives beside the repositories so that nothing in ``db`` imports the runtime.
"""

from __future__ import annotations

from wis2l_core.db.builds import BuildRepository
from wis2l_core.db.components import ComponentRepository
from wis2l_core.db.deployments import DeploymentRepository
from wis2l_core.db.events import EventRepository
from wis2l_core.db.pool import Connection, Database
from wis2l_core.db.projects import ProjectRepository
from wis2l_core.db.templates import TemplateRepository
from wis2l_core.db.tokens import TokenRepository
from wis2l_core.db.users import UserRepository

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


class Transaction(Repositories):
    """The repositories bound to one database transaction (``async with wis.transaction()``).

    Everything done through it commits together or not at all; the events its writes
    record reach JetStream only after it commits (the outbox relay publishes them).
    """
