"""Retention of the audit log: month partitions, ``prune_events`` and ``wis2l db prune``."""

from __future__ import annotations

import asyncio
import datetime
import gzip
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row
from tests.helpers import field_is, has

from wis2l_core import Settings, Wis2l
from wis2l_core.cli import main
from wis2l_core.db.retention import (
    MONTHS_AHEAD,
    PrunedPartition,
    ensure_partitions,
    prune_events,
)
from wis2l_core.errors import ServiceUnavailable, ValidationError

UTC = datetime.UTC
DAY = datetime.timedelta(days=1)

# Rows spread evenly over the `months` whole months before the current one (UTC), in
# month partitions created for them; ids are time-ordered (like uuid7) so the load is
# fast. Each 7th row is an audit-only record (no subject, never published); every other
# row is published.
LOAD = """
INSERT INTO events (id, type, subsystem, project_id, subject, payload, published_at,
                    created_at, updated_at)
SELECT encode(overlay(uuid_send(gen_random_uuid()) PLACING
                      substring(int8send((extract(epoch FROM ts) * 1000)::bigint) FROM 3)
                      FROM 1 FOR 6), 'hex')::uuid,
       'build.progress', 'ignis', NULL,
       CASE WHEN mod(g, 7) = 0 THEN NULL ELSE 'wis2l.build.progress' END,
       jsonb_build_object('progress', mod(g, 101), 'note', %(note)s::text),
       CASE WHEN mod(g, 7) <> 0 THEN ts END, ts, ts
FROM (SELECT g, %(start)s::timestamptz + (%(end)s::timestamptz - %(start)s::timestamptz)
                * ((g - 0.5)::float8 / %(n)s::int) AS ts
      FROM generate_series(1, %(n)s::int) g) x
"""


PENDING = "SELECT count(*) AS n FROM events WHERE published_at IS NULL AND subject IS NOT NULL"


COLUMNS = [
    "id",
    "seq",
    "type",
    "subsystem",
    "project_id",
    "subject",
    "payload",
    "published_at",
    "created_at",
    "updated_at",
    "trace_context",  # 0006
]


def month_start(months_back: int) -> datetime.datetime:
    now = datetime.datetime.now(UTC)
    year, month = divmod(now.year * 12 + now.month - 1 - months_back, 12)
    return datetime.datetime(year, month + 1, 1, tzinfo=UTC)


def load(url: str, rows: int, months: int, note: str = "") -> None:
    """``rows`` events over the ``months`` months before this one, in their partitions."""
    with psycopg.connect(url, autocommit=True) as conn:
        for back in range(1, months + 1):
            conn.execute(
                sql.SQL("CREATE TABLE {} PARTITION OF events FOR VALUES FROM ({}) TO ({})").format(
                    sql.Identifier(f"events_p{month_start(back):%Y%m}"),
                    sql.Literal(month_start(back)),
                    sql.Literal(month_start(back - 1)),
                )
            )
        conn.execute(
            LOAD,
            {"start": month_start(months), "end": month_start(0), "n": rows, "note": note},
        )
        conn.execute("ANALYZE events")


def keeping(months_back: int) -> datetime.timedelta:
    """A retention under which the partitions ending by ``month_start(months_back)`` go."""
    return datetime.datetime.now(UTC) - month_start(months_back) - datetime.timedelta(minutes=1)


def query(url: str, text: str, params: Any = None) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        return conn.execute(text, params).fetchall()


def partitions(url: str) -> list[str]:
    return [r["name"] for r in query(url, "SELECT name FROM wis2l_events_partitions()")]


def unpublish(url: str, before: datetime.datetime, after: datetime.datetime) -> int:
    """Mark a few published rows between ``after`` and ``before`` unpublished again."""
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(
            "UPDATE events SET published_at = NULL WHERE id IN (SELECT id FROM events"
            " WHERE created_at >= %s AND created_at < %s AND subject IS NOT NULL LIMIT 3)",
            (after, before),
        )
        return cur.rowcount


@pytest.mark.timing
async def test_prune_drops_old_months_in_well_under_a_second_and_keeps_unpublished(
    wis2l_database_url: str,
) -> None:
    url = wis2l_database_url
    load(url, 300_000, months=6)
    assert unpublish(url, month_start(4), month_start(5)) == 3  # 5 months back: kept whole
    retention = keeping(2)  # partitions 6, 5 (kept: unpublished), 4 and 3 months back
    before = query(
        url,
        "SELECT tableoid::regclass::text AS part, count(*) AS n,"
        " count(*) FILTER (WHERE published_at IS NULL AND subject IS NOT NULL) AS pending"
        " FROM events GROUP BY 1",
    )
    counts = {r["part"]: r["n"] for r in before}
    gone = {f"events_p{month_start(b):%Y%m}" for b in (6, 4, 3)}
    kept_old = f"events_p{month_start(5):%Y%m}"
    assert sum(counts.values()) == 300_000
    assert gone | {kept_old} <= set(counts)

    start = time.perf_counter()
    report = await prune_events(url, retention=retention)
    elapsed = time.perf_counter() - start

    print(f"prune: {len(report.partitions)} partitions of 300,000 events in {elapsed:.3f} s")
    assert elapsed < 1.0, f"prune took {elapsed:.3f} s"
    assert {p.name for p in report.removed} == gone
    assert [p.action for p in report.partitions if p.name == kept_old] == [
        "kept: unpublished events"
    ]
    assert report.ok
    assert not report.dry_run
    after = query(
        url, "SELECT tableoid::regclass::text AS part, count(*) AS n FROM events GROUP BY 1"
    )
    assert {r["part"]: r["n"] for r in after} == {p: n for p, n in counts.items() if p not in gone}
    pending = query(url, PENDING)
    assert pending == [{"n": 3}]  # every unpublished event is still there
    assert not set(partitions(url)) & gone
    # Estimates come from ANALYZE: close to the real counts.
    for part in report.removed:
        assert abs(part.rows - counts[part.name]) <= counts[part.name] * 0.1
        assert part.bytes > 0

    # Once the relay publishes them, the kept month goes on the next run.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE events SET published_at = now()"
            " WHERE published_at IS NULL AND subject IS NOT NULL"
        )
    again = await prune_events(url, retention=retention)
    assert [p.name for p in again.removed] == [kept_old]


TRICKY = 'quote " backslash \\ \\\\n tab \t newline \n unicode ü€😀'


async def archived_and_removed(
    url: str, folder: Path
) -> tuple[list[PrunedPartition], dict[str, list[dict[str, Any]]]]:
    """Prune the 2 oldest of 3 months into ``folder``: (what prune reported, the rows
    each removed partition held just before, as PostgreSQL renders them in JSON)."""
    load(url, 3_000, months=3, note=TRICKY)
    gone = [f"events_p{month_start(b):%Y%m}" for b in (3, 2)]
    removed = {
        part: [r["row"] for r in query(url, f"SELECT to_jsonb(e) AS row FROM {part} e")]
        for part in gone
    }
    assert all(len(rows) > 900 for rows in removed.values())
    report = await prune_events(url, retention=keeping(1), archive_dir=folder)
    assert sorted(p.name for p in report.removed) == sorted(gone)
    assert sorted(f.name for f in folder.iterdir()) == sorted(
        f"{part}.jsonl.gz" for part in gone
    )  # no temporary file left behind
    assert query(url, "SELECT count(*) AS n FROM events") == [
        {"n": 3_000 - sum(len(r) for r in removed.values())}
    ]
    return list(report.removed), removed


async def test_the_archive_holds_exactly_the_removed_rows(
    wis2l_database_url: str, tmp_path: Path
) -> None:
    parts, removed = await archived_and_removed(wis2l_database_url, tmp_path / "archive")
    for part in parts:
        assert part.archive == tmp_path / "archive" / f"{part.name}.jsonl.gz"
        with gzip.open(part.archive, "rt", encoding="utf-8") as lines:
            archived = [json.loads(line) for line in lines]
        assert part.rows == len(archived) == len(removed[part.name])
        assert [list(row) for row in archived[:1]] == [COLUMNS]  # the table's order
        key = lambda row: row["seq"]  # noqa: E731
        # Every row, every column, the values PostgreSQL rendered.
        assert sorted(archived, key=key) == sorted(removed[part.name], key=key)
        assert {row["payload"]["note"] for row in archived} == {TRICKY}


async def test_the_archive_reads_back_with_pandas(wis2l_database_url: str, tmp_path: Path) -> None:
    import pandas as pd  # the notebook extra, in [dev]: missing, the test fails

    parts, removed = await archived_and_removed(wis2l_database_url, tmp_path / "archive")
    for part in parts:
        assert part.archive is not None
        frame = pd.read_json(part.archive, lines=True, compression="gzip", dtype=False)
        expected = sorted(removed[part.name], key=lambda row: row["seq"])
        assert list(frame.columns) == COLUMNS
        frame = frame.sort_values("seq").reset_index(drop=True)
        assert frame["id"].tolist() == [row["id"] for row in expected]
        assert frame["seq"].tolist() == [row["seq"] for row in expected]
        assert frame["payload"].tolist() == [row["payload"] for row in expected]
        created = pd.to_datetime(frame["created_at"], utc=True, format="ISO8601")
        assert created.tolist() == [
            pd.Timestamp(row["created_at"]) for row in expected
        ]  # exact to the microsecond, in UTC
        assert created.min() >= pd.Timestamp(part.lower or month_start(99))
        assert created.max() < pd.Timestamp(part.upper)


async def test_a_failed_archive_drops_nothing(wis2l_database_url: str, tmp_path: Path) -> None:
    url = wis2l_database_url
    load(url, 500, months=2)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(FileExistsError):
        await prune_events(url, retention=keeping(0), archive_dir=blocker)
    assert query(url, "SELECT count(*) AS n FROM events") == [{"n": 500}]


async def test_dry_run_changes_nothing(wis2l_database_url: str) -> None:
    url = wis2l_database_url
    load(url, 2_000, months=2)
    names = partitions(url)
    report = await prune_events(url, retention=keeping(0), dry_run=True)
    assert [p.action for p in report.removed] == ["would drop", "would drop"]
    assert report.created == ()
    assert partitions(url) == names
    assert query(url, "SELECT count(*) AS n FROM events") == [{"n": 2_000}]


async def test_a_busy_table_is_reported_and_left_for_the_next_run(wis2l_database_url: str) -> None:
    url = wis2l_database_url
    load(url, 200, months=1)
    with psycopg.connect(url) as holder:  # a long transaction that read events
        holder.execute("SELECT count(*) FROM events").fetchone()
        report = await prune_events(url, retention=keeping(0), lock_timeout=0.2)
        assert [p.action for p in report.partitions] == ["busy"]
        assert not report.ok
        async with await psycopg.AsyncConnection.connect(
            url, autocommit=True, row_factory=dict_row
        ) as conn:
            with pytest.raises(
                ServiceUnavailable, check=has(service="database")
            ):  # a month to create: the lock waits
                await ensure_partitions(conn, months_ahead=MONTHS_AHEAD + 1, lock_timeout=0.2)
        holder.rollback()
    report = await prune_events(url, retention=keeping(0))
    assert [p.action for p in report.partitions] == ["dropped"]


async def test_retention_must_be_positive(wis2l_database_url: str) -> None:
    with pytest.raises(ValidationError, check=field_is("retention")):
        await prune_events(wis2l_database_url, retention=datetime.timedelta(0))


async def test_ensure_partitions_moves_rows_out_of_the_default_partition(
    wis2l_database_url: str,
) -> None:
    url = wis2l_database_url
    later = month_start(-(MONTHS_AHEAD + 2)) + DAY  # beyond the partitions made ahead
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO events (type, subsystem, created_at) VALUES ('a', 'ignis', %s),"
            " ('b', 'ignis', %s)",
            (later, month_start(14) + DAY),
        )
    assert query(url, "SELECT count(*) AS n FROM events_default") == [{"n": 2}]
    async with await psycopg.AsyncConnection.connect(
        url, autocommit=True, row_factory=dict_row
    ) as conn:
        created = await ensure_partitions(conn, months_ahead=MONTHS_AHEAD)
        assert created == [f"events_p{month_start(14):%Y%m}", f"events_p{later:%Y%m}"]
        assert await ensure_partitions(conn) == []
        with pytest.raises(ValidationError, check=field_is("months_ahead")):
            await ensure_partitions(conn, months_ahead=-1)
    assert query(url, "SELECT count(*) AS n FROM events_default") == [{"n": 0}]
    assert query(
        url, "SELECT tableoid::regclass::text AS part, type FROM events ORDER BY type"
    ) == [
        {"part": f"events_p{later:%Y%m}", "type": "a"},
        {"part": f"events_p{month_start(14):%Y%m}", "type": "b"},
    ]


async def test_start_makes_the_months_ahead(wis2l_settings: Settings) -> None:
    url = wis2l_settings.database_url
    last = f"events_p{month_start(-MONTHS_AHEAD):%Y%m}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(last)))
    async with Wis2l(wis2l_settings, seed_subscribers=False):
        made = query(url, "SELECT relname AS n FROM pg_class WHERE relname = %s", (last,))
    assert made == [{"n": last}]


def test_cli_prune(
    wis2l_database_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = wis2l_database_url
    load(url, 1_000, months=2)
    monkeypatch.delenv("WIS2L_EVENTS_RETENTION", raising=False)
    base = ["db", "prune", "--database-url", url]

    assert main(base) == 2  # no retention: a usage error, nothing pruned
    err = capsys.readouterr().err
    assert "WIS2L_EVENTS_RETENTION" in err
    assert err.count("\n") == 1
    assert main([*base, "--retention", "ninety days"]) == 2
    assert "--retention" in capsys.readouterr().err

    monkeypatch.setenv("WIS2L_EVENTS_RETENTION", f"{int(keeping(0).total_seconds())}s")
    assert main([*base, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("would drop") == 2
    assert "would remove 2 partition(s)" in out
    assert query(url, "SELECT count(*) AS n FROM events") == [{"n": 1_000}]

    assert main([*base, "--archive", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("dropped") == 2
    assert "removed 2 partition(s)" in out
    assert len(list(tmp_path.glob("events_p*.jsonl.gz"))) == 2
    assert query(url, "SELECT count(*) AS n FROM events") == [{"n": 0}]
    assert main([*base, "--retention", "2w"]) == 0
    assert "removed 0 partition(s)" in capsys.readouterr().out


async def test_prune_and_dry_run_on_an_unmigrated_database(empty_database_url: str) -> None:
    from wis2l_core.errors import SchemaMissing

    with pytest.raises(SchemaMissing):
        await prune_events(empty_database_url, retention=DAY)
    assert (
        await asyncio.to_thread(
            main, ["db", "prune", "--retention", "1d", "--database-url", empty_database_url]
        )
        == 1
    )


@pytest.mark.timing
async def test_writers_and_readers_go_on_while_prune_drops(wis2l_database_url: str) -> None:
    """Prune's locks are brief: writes (into this month) and reads keep going meanwhile."""
    url = wis2l_database_url
    load(url, 20_000, months=4)
    stop = asyncio.Event()
    slowest: list[float] = []

    async def writer(n: int) -> int:
        done = 0
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            while not stop.is_set():
                start = time.perf_counter()
                await conn.execute(
                    "INSERT INTO events (type, subsystem, subject) VALUES (%s, 'ignis', 'wis2l.x')",
                    (f"w{n}",),
                )
                await conn.execute("SELECT count(*) FROM events WHERE type = %s", (f"w{n}",))
                slowest.append(time.perf_counter() - start)
                done += 1
        return done

    tasks = [asyncio.create_task(writer(n)) for n in range(3)]
    await asyncio.sleep(0.2)
    report = await prune_events(url, retention=keeping(0))
    await asyncio.sleep(0.2)
    stop.set()
    written = await asyncio.gather(*tasks)

    assert [p.action for p in report.partitions] == ["dropped"] * 4
    assert min(written) > 0
    assert query(url, "SELECT count(*) AS n FROM events") == [{"n": sum(written)}]
    assert max(slowest) < 2.0  # waits at most for a drop, never for the whole prune


def load_default(url: str, rows: int, start: datetime.datetime, end: datetime.datetime) -> None:
    """``rows`` events between ``start`` and ``end`` with no partition made for them: they
    land in events_default (as rows written with an old created_at do)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(LOAD, {"start": start, "end": end, "n": rows, "note": ""})


def in_default(url: str) -> int:
    return int(query(url, "SELECT count(*) AS n FROM events_default")[0]["n"])


def removal(report: Any) -> list[tuple[Any, ...]]:
    return [
        (p.name, p.lower, p.upper, p.rows, p.exact, p.action.replace("would drop", "dropped"))
        for p in report.partitions
    ]


async def test_a_dry_run_reports_the_rows_waiting_in_the_default_partition(
    wis2l_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = wis2l_database_url
    load_default(url, 10_000, month_start(4), month_start(2))  # two old months
    with psycopg.connect(url, autocommit=True) as conn:  # an older month, unpublished
        conn.execute(
            "INSERT INTO events (type, subsystem, subject, created_at)"
            " VALUES ('a', 'ignis', 'wis2l.a', %s)",
            (month_start(6) + DAY,),
        )
    names = partitions(url)
    assert in_default(url) == 10_001

    dry = await prune_events(url, retention=keeping(1), dry_run=True)
    assert [(p.name, p.action) for p in dry.partitions] == [
        (f"events_p{month_start(6):%Y%m}", "kept: unpublished events"),
        (f"events_p{month_start(4):%Y%m}", "would drop"),
        (f"events_p{month_start(3):%Y%m}", "would drop"),
    ]
    assert sum(p.rows for p in dry.removed) == 10_000
    assert all(p.exact for p in dry.partitions)
    assert dry.created == ()
    assert partitions(url) == names  # the dry run changed nothing
    assert in_default(url) == 10_001

    keep = f"{int(keeping(1).total_seconds())}s"
    args = ["db", "prune", "--dry-run", "--retention", keep, "--database-url", url]
    assert await asyncio.to_thread(main, args) == 0
    out = capsys.readouterr().out
    assert "would remove 2 partition(s)" in out
    shown = [line.split(" rows")[0] for line in out.splitlines() if line.startswith("would drop")]
    assert sorted(int(text.split()[-1]) for text in shown) == sorted(p.rows for p in dry.removed)
    assert "about" not in out  # counted, not estimated

    real = await prune_events(url, retention=keeping(1))
    assert removal(real) == removal(dry)  # what the dry run said is what the run did
    assert query(url, "SELECT count(*) AS n FROM events") == [{"n": 1}]


async def test_old_rows_in_the_default_partition_are_busy_when_their_month_cannot_be_made(
    wis2l_database_url: str,
) -> None:
    url = wis2l_database_url
    load_default(url, 500, month_start(3), month_start(2))
    with psycopg.connect(url) as holder:  # a long transaction that read events
        holder.execute("SELECT count(*) FROM events").fetchone()
        report = await prune_events(url, retention=keeping(1), lock_timeout=0.2)
        assert [(p.name, p.action, p.rows) for p in report.partitions] == [
            (f"events_p{month_start(3):%Y%m}", "busy", 500)
        ]
        assert not report.ok  # the CLI exits 1: run it again
        holder.rollback()
    assert in_default(url) == 500
    report = await prune_events(url, retention=keeping(1))
    assert [(p.action, p.rows) for p in report.partitions] == [("dropped", 500)]
    assert in_default(url) == 0


NOBODY = 65534


def as_nobody(path: Path) -> Path:
    """Make ``path`` (a file, folder or link) another user's, as they would have made it."""
    os.lchown(path, NOBODY, NOBODY)
    return path


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="files of another user need root")


@needs_root
async def test_the_archive_follows_no_link_and_reuses_no_file(
    wis2l_database_url: str, tmp_path: Path
) -> None:
    url = wis2l_database_url
    load(url, 400, months=2)
    shared = tmp_path / "shared"  # like /tmp: anyone may create files, the sticky bit is set
    shared.mkdir()
    shared.chmod(0o1777)
    victims = {}
    old, older = (f"events_p{month_start(b):%Y%m}" for b in (1, 2))
    for name in (f".{old}.jsonl.gz.tmp", f"{old}.jsonl.gz"):  # links at both names
        victims[name] = tmp_path / f"victim-{name}"
        victims[name].write_bytes(b"precious")
        (shared / name).symlink_to(victims[name])
        as_nobody(shared / name)
    planted = shared / f".{older}.jsonl.gz.tmp"  # a file made ready for prune to reuse
    planted.write_bytes(b"")
    planted.chmod(0o666)
    as_nobody(planted)

    report = await prune_events(url, retention=keeping(0), archive_dir=shared)
    assert [p.action for p in report.removed] == ["dropped", "dropped"]
    for victim in victims.values():
        assert victim.read_bytes() == b"precious"  # no link was followed
    assert planted.read_bytes() == b""  # not reused
    assert planted.stat().st_uid == NOBODY
    for part in report.removed:
        assert part.archive == shared / f"{part.name}.jsonl.gz"
        st = part.archive.lstat()
        assert stat.S_ISREG(st.st_mode)  # the planted link was replaced, not written through
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (os.geteuid(), 0o600)
        with gzip.open(part.archive) as fh:
            assert len(fh.read().splitlines()) == part.rows > 0
    assert sorted(p.name for p in shared.iterdir() if p.name.startswith(".")) == sorted(
        [planted.name, f".{old}.jsonl.gz.tmp"]
    )  # theirs, untouched; no temporary file of ours is left


@pytest.mark.parametrize("kind", ["world-writable", "group-writable", "theirs", "their link"])
async def test_an_unsafe_archive_folder_is_refused_before_anything_is_dropped(
    wis2l_database_url: str, tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = wis2l_database_url
    load(url, 300, months=2)
    names = partitions(url)
    folder = tmp_path / "archive"
    folder.mkdir()
    if kind == "world-writable":
        folder.chmod(0o777)
    elif kind == "group-writable":
        folder.chmod(0o770)
    else:
        if os.geteuid() != 0:
            pytest.skip("files of another user need root")
        if kind == "theirs":
            as_nobody(folder)
        else:
            folder = tmp_path / "link"
            folder.symlink_to(tmp_path / "archive")
            as_nobody(folder)
    with pytest.raises(ValidationError, match="nothing was pruned") as caught:
        await prune_events(url, retention=keeping(0), archive_dir=folder)
    assert caught.value.field == "archive_dir"
    code = await asyncio.to_thread(
        main, ["db", "prune", "--retention", "1d", "--archive", str(folder), "--database-url", url]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert f"--archive: archive folder {folder}" in err
    assert partitions(url) == names  # every partition is still there, every row too
    assert query(url, "SELECT count(*) AS n FROM events") == [{"n": 300}]
    assert list((tmp_path / "archive").iterdir()) == []
