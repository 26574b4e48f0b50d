"""Component repository (`sql/queries/components.sql`)."""

from __future__ import annotations

from wis2l_core.db.repository import Repository

__all__ = ["ComponentRepository"]


class ComponentRepository(Repository):
    """Component rows."""

    table = "components"
