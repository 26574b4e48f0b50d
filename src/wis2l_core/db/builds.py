"""Build repository (`sql/queries/builds.sql`)."""

from __future__ import annotations

from wis2l_core.db.repository import Repository

__all__ = ["BuildRepository"]


class BuildRepository(Repository):
    """Build rows."""

    table = "builds"
