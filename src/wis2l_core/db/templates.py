"""IGNITION project templates: a file tree for one engine (``sql/queries/templates.sql``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from wis2l_core.db.repository import Repository
from wis2l_core.db.validate import (
    check_enum,
    check_json_object,
    check_optional_text,
    check_slug,
    check_text,
    check_uuid,
)
from wis2l_core.ids import uuid7
from wis2l_core.models import Engine, Page, Template

__all__ = ["TemplateRepository"]


def _template(row: DictRow) -> Template:
    return Template(
        id=row["id"],
        slug=row["slug"],
        name=row["name"],
        engine=Engine(row["engine"]),
        description=row["description"],
        files=row["files"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class TemplateRepository(Repository):
    """Project templates, found by id or slug, listed by engine."""

    table = "templates"

    async def find_by_id(self, id: UUID | str) -> Template | None:
        """The template with this id, or ``None``."""
        row = await self._one("find_by_id", id=check_uuid("id", id))
        return None if row is None else _template(row)

    async def find_by_slug(self, slug: str) -> Template | None:
        """The template with this slug, or ``None``."""
        row = await self._one("find_by_slug", slug=check_text("slug", slug, max_len=64))
        return None if row is None else _template(row)

    async def find_all(
        self, engine: Engine | str | None = None, *, limit: int = 50, after: str | None = None
    ) -> Page[Template]:
        """Templates in creation order, optionally only one engine's.

        Raises:
            ValidationError: a bad engine, limit or cursor.
        """
        if engine is None:
            return await self._page("find_all", _template, limit=limit, after=after)
        return await self._page(
            "find_all_by_engine",
            _template,
            limit=limit,
            after=after,
            engine=check_enum("engine", engine, Engine).value,
        )

    async def create(
        self,
        *,
        slug: str,
        name: str,
        engine: Engine | str,
        description: str | None = None,
        files: Mapping[str, Any] | None = None,
    ) -> Template:
        """Create a template.

        Args:
            slug: unique: ``^[a-z0-9]+(-[a-z0-9]+)*$``, at most 64 characters.
            name: 1..200 characters.
            engine: the engine it is for.
            description: free text, at most 10,000 characters.
            files: the file tree as a JSON object, e.g. ``{"main.lua": "..."}`` (``{}``
                when omitted).

        Raises:
            ValidationError: a field is malformed (``field`` names it).
            Conflict: the slug is taken (``field == "slug"``).
        """
        params = {
            "id": uuid7(),
            "slug": check_slug("slug", slug),
            "name": check_text("name", name, max_len=200),
            "engine": check_enum("engine", engine, Engine).value,
            "description": check_optional_text("description", description, max_len=10_000),
            "files": Jsonb(check_json_object("files", {} if files is None else files)),
        }
        row = await self._write("create", params)
        assert row is not None
        return _template(row)
