"""Project repository (`sql/queries/projects.sql`)."""

from __future__ import annotations

from wis2l_core.db.repository import Repository

__all__ = ["ProjectRepository"]


class ProjectRepository(Repository):
    """Project rows."""

    table = "projects"
