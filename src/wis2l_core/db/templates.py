"""IGNITION project templates: a file tree for one engine (``sql/queries/templates.sql``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from wis2l_core._validate import (
    check_enum,
    check_json_object,
    check_optional_text,
    check_slug,
    check_text,
    check_uuid,
)
from wis2l_core.db.repository import DeleteById, FindAll, FindBySlug, Repository, set_field
from wis2l_core.db.rows import row_builder
from wis2l_core.ids import uuid7
from wis2l_core.models import Engine, Page, Template
from wis2l_core.sentinel import UNSET, Unset

__all__ = ["TemplateRepository"]

MAX_NAME = 200
MAX_DESCRIPTION = 10_000


_template = row_builder(Template)


def _name(value: object) -> str:
    return check_text("name", value, max_len=MAX_NAME)


def _description(value: object) -> str | None:
    return check_optional_text("description", value, max_len=MAX_DESCRIPTION)


def _files(value: object) -> Jsonb:
    return Jsonb(check_json_object("files", {} if value is None else value))


class TemplateRepository(Repository[Template], FindAll, FindBySlug, DeleteById):
    """Project templates, found by id or slug, listed by engine, updated and deleted.

    ``delete(id)`` deletes the template; projects started from it stay, their
    ``template_id`` becomes ``None``. No event is recorded.
    """

    table = "templates"
    _row = staticmethod(_template)

    async def find_all(
        self, engine: Engine | str | None = None, *, limit: int = 50, after: str | None = None
    ) -> Page[Template]:
        """Templates in creation order, optionally only one engine's.

        Raises:
            ValidationError: a bad engine, limit or cursor.
        """
        return await self._find_all_by(
            "find_all_by_engine", "engine", engine, Engine, limit=limit, after=after
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
            "name": _name(name),
            "engine": check_enum("engine", engine, Engine).value,
            "description": _description(description),
            "files": _files(files),
        }
        return await self._write_model("create", params)

    async def update(
        self,
        id: UUID | str,
        *,
        slug: str | Unset = UNSET,
        name: str | Unset = UNSET,
        engine: Engine | str | Unset = UNSET,
        description: str | Unset | None = UNSET,
        files: Mapping[str, Any] | Unset | None = UNSET,
    ) -> Template:
        """Change the given fields; the others keep their values.

        ``description=None`` clears it; ``files`` replaces the whole tree (``None`` means
        ``{}``). Projects already started from the template keep what they were made
        with. A call that changes nothing (no fields, or every value equal to the stored
        one) keeps ``updated_at``. No event is recorded.

        Args:
            id: the template.
            slug: unique: ``^[a-z0-9]+(-[a-z0-9]+)*$``, at most 64 characters.
            name: 1..200 characters.
            engine: the engine it is for.
            description: free text, at most 10,000 characters.
            files: the file tree as a JSON object.

        Returns:
            The template as stored after the call.

        Raises:
            NotFound: no template has this id.
            ValidationError: a field is malformed (``field`` names it).
            Conflict: the new slug is taken (``field == "slug"``).
        """
        params: dict[str, Any] = {"id": check_uuid("id", id)}
        set_field(params, "slug", slug, lambda v: check_slug("slug", v))
        set_field(params, "name", name, _name)
        set_field(params, "engine", engine, lambda v: check_enum("engine", v, Engine).value)
        set_field(params, "description", description, _description)
        set_field(params, "files", files, _files)
        row = await self._write_found("update", params, noun="template")
        return _template(row)
