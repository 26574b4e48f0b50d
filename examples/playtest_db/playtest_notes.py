"""Typed queries of ``playtest_notes.sql``.

This module is written by ``wis2l db generate``: do not edit it. After changing
the ``.sql`` file or a migration, run ``wis2l db generate --line-length 100``.
"""

import datetime
import uuid

from wis2l_core.db import typed


@typed.frozen
class AddRow:
    """A row of :func:`add`."""

    id: uuid.UUID
    project_id: uuid.UUID
    build_id: uuid.UUID | None
    rating: int
    body: str
    created_at: datetime.datetime


_ADD = typed.Query(
    name="add",
    text="""-- Add a note on a project, optionally on one of its builds.
INSERT INTO playtest_notes (project_id, build_id, rating, body)
VALUES (%(project_id)s::uuid, %(build_id)s::uuid, %(rating)s::smallint, %(body)s::text)
RETURNING id, project_id, build_id, rating, body, created_at""",
    file="playtest_notes.sql",
    line=7,
    shape="one",
)


async def add(
    db: typed.QueryMethods,
    /,
    *,
    project_id: uuid.UUID,
    build_id: uuid.UUID | None,
    rating: int,
    body: str,
) -> AddRow | None:
    """Add a note on a project, optionally on one of its builds.

    From ``playtest_notes.sql:7``.
    """
    values = {"project_id": project_id, "build_id": build_id, "rating": rating, "body": body}
    return await typed.one(db, _ADD, values, AddRow)


@typed.frozen
class PageForProjectRow:
    """A row of :func:`page_for_project`."""

    id: uuid.UUID
    project_id: uuid.UUID
    build_id: uuid.UUID | None
    rating: int
    body: str
    created_at: datetime.datetime


_PAGE_FOR_PROJECT = typed.Query(
    name="page_for_project",
    text="""-- A project's notes, a keyset page at a time.
SELECT id, project_id, build_id, rating, body, created_at
FROM playtest_notes
WHERE project_id = %(project_id)s::uuid AND id > %(after)s::uuid
ORDER BY id
LIMIT %(limit)s::int""",
    file="playtest_notes.sql",
    line=13,
    shape="page",
)


async def page_for_project(
    db: typed.QueryMethods,
    /,
    *,
    project_id: uuid.UUID,
    limit: int = 50,
    after: str | None = None,
) -> typed.Page[PageForProjectRow]:
    """A project's notes, a keyset page at a time.

    From ``playtest_notes.sql:13``.
    """
    values = {"project_id": project_id}
    return await typed.page(
        db,
        _PAGE_FOR_PROJECT,
        values,
        PageForProjectRow,
        limit=limit,
        after=after,
    )


@typed.frozen
class RatingOfProjectRow:
    """A row of :func:`rating_of_project`."""

    notes: int
    average: float | None


_RATING_OF_PROJECT = typed.Query(
    name="rating_of_project",
    text="""-- How many notes a project has, and their average rating (None without notes).
SELECT count(*) AS "notes!", round(avg(rating), 2)::float8 AS average
FROM playtest_notes
WHERE project_id = %(project_id)s::uuid""",
    file="playtest_notes.sql",
    line=21,
    shape="one",
)


async def rating_of_project(
    db: typed.QueryMethods,
    /,
    *,
    project_id: uuid.UUID,
) -> RatingOfProjectRow | None:
    """How many notes a project has, and their average rating (None without notes).

    From ``playtest_notes.sql:21``.
    """
    return await typed.one(db, _RATING_OF_PROJECT, {"project_id": project_id}, RatingOfProjectRow)
