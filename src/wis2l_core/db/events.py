"""Event repository (`sql/queries/events.sql`)."""

from __future__ import annotations

from wis2l_core.db.repository import Repository

__all__ = ["EventRepository"]


class EventRepository(Repository):
    """Event rows."""

    table = "events"
