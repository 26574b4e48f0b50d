"""The audit log (``sql/queries/events.sql``).

The ``events`` table holds two kinds of rows: the domain events every repository write
records (they have a ``subject`` and wait in the outbox until the relay publishes them),
and audit-only records written with :meth:`EventRepository.create` (no ``subject``:
never published). Both are listed by the ``find_by_*`` methods, oldest first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from wis2l_core._validate import (
    check_enum,
    check_json_object,
    check_optional_uuid,
    check_text,
)
from wis2l_core.db.repository import FindByProject, Repository
from wis2l_core.db.rows import row_builder
from wis2l_core.ids import uuid7
from wis2l_core.models import Event, Page, Subsystem

__all__ = ["EventRepository"]


_event = row_builder(Event)


class EventRepository(Repository[Event], FindByProject):
    """Audit records of the platform's subsystems, and the domain events in the outbox.

    ``find_by_id(id)`` finds a domain event or an audit-only record (``None`` if there
    is none, or it was pruned). A domain event's id is the one it carried on the bus (its
    ``Nats-Msg-Id``), so a consumer can look up the audit row of a message it received.
    ``find_by_project_id`` lists the project's events of every subsystem.
    """

    table = "events"
    _row = staticmethod(_event)

    async def create(
        self,
        *,
        type: str,
        subsystem: Subsystem | str,
        payload: Mapping[str, Any] | None = None,
        project_id: UUID | str | None = None,
    ) -> Event:
        """Record an audit-only event (never published on the bus).

        Args:
            type: what happened, e.g. ``"template.viewed"`` (1..200 characters).
            subsystem: the subsystem whose log it belongs to.
            payload: a JSON object of details (``{}`` when omitted).
            project_id: the project it is about, if any; the record outlives the project.

        Raises:
            ValidationError: a malformed field.
            NotFound: no project has ``project_id``.
        """
        params = {
            "id": uuid7(),
            "type": check_text("type", type, max_len=200),
            "subsystem": check_enum("subsystem", subsystem, Subsystem).value,
            "project_id": check_optional_uuid("project_id", project_id),
            "payload": Jsonb(check_json_object("payload", {} if payload is None else payload)),
        }
        return await self._write_model("create", params)

    async def find_by_subsystem(
        self, subsystem: Subsystem | str, *, limit: int = 50, after: str | None = None
    ) -> Page[Event]:
        """The subsystem's events, oldest first.

        Args:
            subsystem: the subsystem.
            limit: page size, 1..1000.
            after: the ``next_cursor`` of the previous page.

        Returns:
            One page; ``next_cursor`` is ``None`` on the last one.

        Raises:
            ValidationError: a bad subsystem, limit or cursor.
        """
        return await self._page(
            "find_by_subsystem",
            limit=limit,
            after=after,
            subsystem=check_enum("subsystem", subsystem, Subsystem).value,
        )
