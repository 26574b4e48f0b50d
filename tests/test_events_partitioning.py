"""sql/migrations/0004 on a populated ``events`` table: every row kept, nothing else lost."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from wis2l_core.db.migrate import apply_migrations
from wis2l_core.db.retention import prune_events
from wis2l_core.db.sql import migrations

POPULATE = """
INSERT INTO users (id, email, name, subject)
VALUES ('00000000-0000-4000-8000-000000000001', 'o@example.com', 'Owner', 'owner');
INSERT INTO projects (id, owner_id, name, slug, engine)
VALUES ('00000000-0000-4000-8000-0000000000aa', '00000000-0000-4000-8000-000000000001',
        'P', 'p', 'web');
INSERT INTO events (type, subsystem, project_id, subject, payload, published_at, created_at,
                    updated_at)
SELECT 'build.progress', 'ignis',
       CASE WHEN g % 3 = 0 THEN '00000000-0000-4000-8000-0000000000aa'::uuid END,
       CASE WHEN g % 10 = 0 THEN NULL ELSE 'wis2l.build.progress' END,
       jsonb_build_object('n', g, 'text', 'a \\ b "c"'),
       CASE WHEN g % 10 <> 0 AND g <= 1990 THEN now() - interval '400 days' * (2000 - g) / 2000 END,
       now() - interval '400 days' * (2000 - g) / 2000,
       now() - interval '400 days' * (2000 - g) / 2000
FROM generate_series(1, 2000) g;
"""


def old_migrations(tmp_path: Path) -> Path:
    folder = tmp_path / "migrations"
    folder.mkdir()
    for migration in migrations():
        if migration.name < "0004":
            (folder / f"{migration.name}.sql").write_text(migration.text, encoding="utf-8")
    return folder


def fetch(url: str, query: str, params: Any = None) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(query, params).fetchall()


# Without trace_context: 0006 adds that column (NULL in every old row) after 0004.
ALL_ROWS = "SELECT to_jsonb(e) - 'trace_context' AS row FROM events e ORDER BY seq"
PENDING = "SELECT id FROM events WHERE published_at IS NULL AND subject IS NOT NULL ORDER BY seq"


async def test_a_populated_table_keeps_every_row_and_behaves_as_before(
    empty_database_url: str, tmp_path: Path
) -> None:
    url = empty_database_url
    await apply_migrations(url, directory=old_migrations(tmp_path))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(POPULATE)
    before = fetch(url, ALL_ROWS)
    pending = fetch(url, PENDING)
    assert len(before) == 2000
    assert len(pending) == 9  # g = 1991..1999 with a subject

    applied = await apply_migrations(url)
    assert applied[0] == "0004_events_partitioned"

    assert fetch(url, ALL_ROWS) == before  # every row, every column, same values
    assert fetch(url, PENDING) == pending  # the relay's queue, in the same order
    parts = fetch(url, "SELECT name, lower_bound, upper_bound FROM wis2l_events_partitions()")
    assert parts[0]["name"] == "events_history"
    assert parts[0]["lower_bound"] is None
    assert parts[-1] == {"name": "events_default", "lower_bound": None, "upper_bound": None}
    assert len(parts) == 1 + 3 + 1  # history (to the end of this month), 3 ahead, default
    assert fetch(url, "SELECT count(*) AS n FROM events_history") == [{"n": 2000}]

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("LISTEN wis2l_outbox")
        row = conn.execute(
            "INSERT INTO events (type, subsystem, subject) VALUES ('x', 'spark', 'wis2l.x')"
            " RETURNING seq, tableoid::regclass::text AS part"
        ).fetchone()
        assert row is not None
        assert row[0] > max(r["row"]["seq"] for r in before)  # seq goes on
        assert row[1] == "events_history"  # this month's rows go to the old table
        assert len(list(conn.notifies(timeout=2, stop_after=1))) == 1  # events_notify fires
        # events_touch: a real change stamps updated_at; ON DELETE SET NULL still holds.
        conn.execute("UPDATE events SET payload = '{\"n\": -1}' WHERE seq = 1")
        conn.execute("DELETE FROM projects")
    touched = fetch(url, "SELECT updated_at > created_at AS t FROM events WHERE seq = 1")
    assert touched == [{"t": True}]
    assert fetch(url, "SELECT count(*) AS n FROM events WHERE project_id IS NOT NULL") == [{"n": 0}]

    # The old table holds unpublished events: prune keeps it, whatever the retention.
    report = await prune_events(url, retention=datetime.timedelta(seconds=1), dry_run=True)
    assert report.removed == ()


async def test_an_index_built_beforehand_is_used(empty_database_url: str, tmp_path: Path) -> None:
    url = empty_database_url
    await apply_migrations(url, directory=old_migrations(tmp_path))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(POPULATE)
        conn.execute(
            "CREATE UNIQUE INDEX CONCURRENTLY events_id_created_at_key ON events (id, created_at)"
        )
        built = conn.execute("SELECT 'events_id_created_at_key'::regclass::oid").fetchone()
    await apply_migrations(url)
    key = fetch(
        url,
        "SELECT conindid AS oid FROM pg_constraint"
        " WHERE conrelid = 'events_history'::regclass AND contype = 'p'",
    )
    assert built is not None
    assert key == [{"oid": built[0]}]


async def test_a_new_database_has_month_partitions_only(wis2l_database_url: str) -> None:
    names = [
        r["name"] for r in fetch(wis2l_database_url, "SELECT name FROM wis2l_events_partitions()")
    ]
    now = datetime.datetime.now(datetime.UTC)
    assert names[0] == f"events_p{now:%Y%m}"
    assert names[-1] == "events_default"
    assert len(names) == 5
    keys = fetch(
        wis2l_database_url,
        "SELECT pg_get_constraintdef(oid) AS key FROM pg_constraint"
        " WHERE conrelid = 'events'::regclass AND contype = 'p'",
    )
    assert keys == [{"key": "PRIMARY KEY (id, created_at)"}]


async def test_find_by_id_probes_each_partitions_key(wis2l_database_url: str) -> None:
    plan = str(
        fetch(
            wis2l_database_url,
            "EXPLAIN (FORMAT JSON) SELECT * FROM events"
            " WHERE id = '00000000-0000-7000-8000-000000000000'",
        )
    )
    assert "Seq Scan" not in plan
    assert plan.count("_pkey") == 5  # one index probe per partition
