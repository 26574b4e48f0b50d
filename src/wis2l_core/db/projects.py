"""Projects: games on one engine, owned by a user (``sql/queries/projects.sql``).

A project's slug is unique across the platform. Deleting a project deletes its
components, tokens, builds and deployments (``ON DELETE CASCADE``); its audit events stay,
with ``project_id`` set to ``NULL``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from wis2l_core._validate import (
    check_enum,
    check_json_object,
    check_optional_text,
    check_optional_uuid,
    check_slug,
    check_text,
    check_uuid,
)
from wis2l_core.db.repository import DeleteById, FindBySlug, Repository, set_field
from wis2l_core.db.rows import row_builder
from wis2l_core.ids import uuid7
from wis2l_core.models import Engine, Page, Project
from wis2l_core.sentinel import UNSET, Unset

__all__ = ["ProjectRepository"]

MAX_NAME = 200
MAX_DESCRIPTION = 10_000


_project = row_builder(Project)


def _metadata(value: object) -> Jsonb:
    return Jsonb(check_json_object("metadata", {} if value is None else value))


class ProjectRepository(Repository[Project], FindBySlug, DeleteById):
    """Projects, found by id or slug, listed by owner and/or engine.

    ``delete(id)`` deletes the project and, by cascade, its components, tokens, builds
    and deployments; its audit events are kept with ``project_id`` set to ``NULL``.
    """

    table = "projects"
    _row = staticmethod(_project)

    async def find_all(
        self,
        owner_id: UUID | str | None = None,
        engine: Engine | str | None = None,
        *,
        limit: int = 50,
        after: str | None = None,
    ) -> Page[Project]:
        """Projects in creation order, optionally only one owner's and/or one engine's.

        Args:
            owner_id: only this user's projects.
            engine: only projects on this engine.
            limit: page size, 1..1000.
            after: the ``next_cursor`` of the previous page.

        Raises:
            ValidationError: a bad filter, limit or cursor.
        """
        params: dict[str, Any] = {}
        if owner_id is not None:
            params["owner_id"] = check_uuid("owner_id", owner_id)
        if engine is not None:
            params["engine"] = check_enum("engine", engine, Engine).value
        name = {
            (False, False): "find_all",
            (True, False): "find_all_by_owner",
            (False, True): "find_all_by_engine",
            (True, True): "find_all_by_owner_and_engine",
        }[(owner_id is not None, engine is not None)]
        return await self._page(name, limit=limit, after=after, **params)

    async def create(
        self,
        *,
        owner_id: UUID | str,
        name: str,
        slug: str,
        engine: Engine | str,
        template_id: UUID | str | None = None,
        description: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Project:
        """Create a project.

        Args:
            owner_id: the user who owns it.
            name: 1..200 characters.
            slug: unique URL name: ``^[a-z0-9]+(-[a-z0-9]+)*$``, at most 64 characters.
            engine: the engine it targets.
            template_id: the template it was started from, if any.
            description: free text, at most 10,000 characters.
            metadata: a JSON object (``{}`` when omitted).

        Raises:
            ValidationError: a field is malformed (``field`` names it).
            Conflict: the slug is taken (``field == "slug"``).
            NotFound: no user has ``owner_id``, or no template has ``template_id``.
        """
        params = {
            "id": uuid7(),
            "owner_id": check_uuid("owner_id", owner_id),
            "name": check_text("name", name, max_len=MAX_NAME),
            "slug": check_slug("slug", slug),
            "engine": check_enum("engine", engine, Engine).value,
            "template_id": check_optional_uuid("template_id", template_id),
            "description": check_optional_text("description", description, max_len=MAX_DESCRIPTION),
            "metadata": _metadata(metadata),
        }
        return await self._write_model("create", params)

    async def update(
        self,
        id: UUID | str,
        *,
        name: str | Unset = UNSET,
        slug: str | Unset = UNSET,
        engine: Engine | str | Unset = UNSET,
        template_id: UUID | str | Unset | None = UNSET,
        description: str | Unset | None = UNSET,
        metadata: Mapping[str, Any] | Unset | None = UNSET,
    ) -> Project:
        """Change the given fields; the others keep their values.

        ``template_id=None`` and ``description=None`` clear them; ``metadata`` replaces
        the whole object (``None`` means ``{}``). A call that changes nothing (no fields,
        or every value equal to the stored one) keeps ``updated_at``.

        Args:
            id: the project.
            name: 1..200 characters.
            slug: unique URL name: ``^[a-z0-9]+(-[a-z0-9]+)*$``, at most 64 characters.
            engine: the engine it targets.
            template_id: the template it was started from.
            description: free text, at most 10,000 characters.
            metadata: a JSON object.

        Returns:
            The project as stored after the call.

        Raises:
            NotFound: no project has this id, or no template has ``template_id``.
            ValidationError: a field is malformed.
            Conflict: the new slug is taken.
        """
        params: dict[str, Any] = {"id": check_uuid("id", id)}
        set_field(params, "name", name, lambda v: check_text("name", v, max_len=MAX_NAME))
        set_field(params, "slug", slug, lambda v: check_slug("slug", v))
        set_field(params, "engine", engine, lambda v: check_enum("engine", v, Engine).value)
        set_field(
            params, "template_id", template_id, lambda v: check_optional_uuid("template_id", v)
        )
        set_field(
            params,
            "description",
            description,
            lambda v: check_optional_text("description", v, max_len=MAX_DESCRIPTION),
        )
        set_field(params, "metadata", metadata, _metadata)
        row = await self._write_found("update", params, noun="project")
        return _project(row)
