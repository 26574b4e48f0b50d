"""Your own tables: an app migration, an app query file, typed functions, a keyset page.

The app keeps ``own_tables/migrations/0001_playtest_notes.sql`` (made with ``wis2l db new
playtest_notes --dir examples/own_tables/migrations``) and ``own_tables/queries/
playtest_notes.sql``. ``WIS2L_MIGRATIONS`` (here: the ``migrations=`` setting) makes
``wis.migrate()`` apply it after the library's migrations, tracked as source
``own_tables``. ``wis2l db generate`` turned the query file into
``playtest_db/playtest_notes.py``: one typed function per query, rows as frozen
attrs classes. A note is written in the same transaction as a repository write (a build),
then the notes are paged with keyset cursors.

Regenerate after changing the query file or the migration (no database needed: an
embedded one is started and migrated)::

    WIS2L_MIGRATIONS=own_tables=examples/own_tables/migrations \\
    WIS2L_QUERIES=examples/own_tables/queries \\
    wis2l db generate --out examples/playtest_db --line-length 100

Run it with no set-up at all (an embedded stack is started), or set DATABASE_URL /
REDIS_URL / NATS_URL to use your servers::

    python examples/own_tables.py
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from _common import runtime
from playtest_db import playtest_notes as notes

from wis2l_core import Engine

HERE = Path(__file__).resolve().parent / "own_tables"
MIGRATIONS = f"own_tables={HERE / 'migrations'}"  # what WIS2L_MIGRATIONS would say


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
            first = await notes.add(
                tx, project_id=project.id, build_id=build.id, rating=4, body="fun"
            )
        assert first is not None  # :one returns the row or None
        print(f"note     {first.rating}/5 {first.body!r} on build {build.target}")

        for rating, body in [(5, "great"), (3, "too dark"), (2, "crashed"), (5, "again!")]:
            await notes.add(
                wis.database, project_id=project.id, build_id=None, rating=rating, body=body
            )

        page = await notes.page_for_project(wis.database, project_id=project.id, limit=2)
        pages = [page]
        while page.next_cursor is not None:
            page = await notes.page_for_project(
                wis.database, project_id=project.id, limit=2, after=page.next_cursor
            )
            pages.append(page)
        print(f"pages    {[len(p) for p in pages]}")
        print(f"bodies   {sorted(note.body for p in pages for note in p)}")

        summary = await notes.rating_of_project(wis.database, project_id=project.id)
        assert summary is not None
        print(f"rating   {{'notes': {summary.notes}, 'average': {summary.average}}}")
        applied = await wis.database.fetch_all(
            "SELECT source || '/' || name AS migration FROM wis2l_migrations"
            " WHERE source = 'own_tables'"
        )
        print(f"migrated {[row['migration'] for row in applied]}")


if __name__ == "__main__":
    asyncio.run(main())
