"""Template repository (`sql/queries/templates.sql`)."""

from __future__ import annotations

from wis2l_core.db.repository import Repository

__all__ = ["TemplateRepository"]


class TemplateRepository(Repository):
    """Template rows."""

    table = "templates"
