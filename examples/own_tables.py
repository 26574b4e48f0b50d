"""Your own tables: an app migration, an app query file, rows as attrs classes, a keyset page.

The app keeps ``own_tables/migrations/0001_playtest_notes.sql`` (made with ``wis2l db new
playtest_notes --dir examples/own_tables/migrations``) and ``own_tables/queries/
playtest_notes.sql``. ``WIS2L_MIGRATIONS`` (here: the ``migrations=`` setting) makes
``wis.migrate()`` apply it after the library's migrations, tracked as source
``own_tables``. The notes are written with ``tx.fetch_one`` in the same transaction as a
repository write (a build), read back as an attrs class and paged with keyset cursors.

Run it with no set-up at all (an embedded stack is started), or set DATABASE_URL /
REDIS_URL / NATS_URL to use your servers::

    python examples/own_tables.py
"""

from __future__ import annotations

import asyncio
import datetime
import time
from pathlib import Path
from uuid import UUID

import attrs
from _common import runtime

from wis2l_core import Engine
from wis2l_core.db import load_queries

HERE = Path(__file__).resolve().parent / "own_tables"
MIGRATIONS = f"own_tables={HERE / 'migrations'}"  # what WIS2L_MIGRATIONS would say
NOTES = load_queries(HERE / "queries" / "playtest_notes.sql")


@attrs.frozen
class PlaytestNote:
    """One row of the app's ``playtest_notes`` table."""

    id: UUID
    project_id: UUID
    build_id: UUID | None
    rating: int
    body: str
    created_at: datetime.datetime


async def main() -> None:
    async with runtime(migrations=[MIGRATIONS]) as wis:
        stamp = int(time.time() * 1000)
        user = await wis.users.create(
            email=f"tess-{stamp}@example.com", name="Tess", subject=f"nocturna|tess-{stamp}"
        )
        project = await wis.projects.create(
            owner_id=user.id, name="Moss Maze", slug=f"moss-maze-{stamp}", engine=Engine.GODOT
        )

        # A repository write and the app's own row, in one transaction: both or neither.
        async with wis.transaction() as tx:
            build = await tx.builds.create(project_id=project.id, target="html5")
            first = await tx.fetch_one(
                NOTES["add"],
                {"project_id": project.id, "build_id": build.id, "rating": 4, "body": "fun"},
                row_type=PlaytestNote,
            )
        assert first is not None
        print(f"note     {first.rating}/5 {first.body!r} on build {build.target}")

        for rating, body in [(5, "great"), (3, "too dark"), (2, "crashed"), (5, "again!")]:
            await wis.database.execute(
                NOTES["add"],
                {"project_id": project.id, "build_id": None, "rating": rating, "body": body},
            )

        page = await wis.database.page(
            NOTES["page_for_project"], {"project_id": project.id}, limit=2, row_type=PlaytestNote
        )
        pages = [page]
        while page.next_cursor is not None:
            page = await wis.database.page(
                NOTES["page_for_project"],
                {"project_id": project.id},
                limit=2,
                after=page.next_cursor,
                row_type=PlaytestNote,
            )
            pages.append(page)
        print(f"pages    {[len(p) for p in pages]}")
        print(f"bodies   {sorted(note.body for p in pages for note in p)}")

        summary = await wis.database.fetch_one(
            NOTES["rating_of_project"], {"project_id": project.id}
        )
        print(f"rating   {summary}")
        applied = await wis.database.fetch_all(
            "SELECT source || '/' || name AS migration FROM wis2l_migrations"
            " WHERE source = 'own_tables'"
        )
        print(f"migrated {[row['migration'] for row in applied]}")


if __name__ == "__main__":
    asyncio.run(main())
