"""A bounded audit log: month partitions of ``events``, created ahead and dropped when old.

``events`` is partitioned by month on ``created_at`` (``sql/migrations/0004``), so history
goes by dropping whole partitions: no ``DELETE``, no table rewrite, no ``VACUUM``, in time
that does not depend on how many rows a partition holds. Two entry points:

- :func:`ensure_partitions` creates the coming months' partitions (the migration creates
  three ahead; :func:`prune_events` and the app's start add more). A row no partition
  covers lands in ``events_default`` and moves to its month when the month is created.
- :func:`prune_events` (``wis2l db prune``) drops the partitions that end before
  ``now - retention``. A partition still holding an event the relay has not published
  is kept whole: unpublished events are never removed. With ``archive_dir``, each
  partition is first written to ``<archive_dir>/<partition>.jsonl.gz`` (gzip JSON Lines,
  one object per row with every column), made durable, and only then dropped.

Old rows waiting in ``events_default`` are part of it: the run first gives their months
partitions (moving the rows) and then drops those; a dry run reports those months as the
run would, rows counted, and creates nothing.

The archive folder's rules (whose it is, who may write into it, how files are made) are
in :mod:`wis2l_core.db._archive`.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import attrs
import psycopg
from psycopg import errors as pg
from psycopg import sql as pgsql
from psycopg.rows import DictRow, dict_row

from wis2l_core.db._archive import ArchiveFolder, archive_partition
from wis2l_core.db.connect import connect
from wis2l_core.db.errors import map_errors
from wis2l_core.db.locks import MIGRATIONS, advisory_lock
from wis2l_core.db.sql import query_file
from wis2l_core.errors import ServiceUnavailable, ValidationError

__all__ = [
    "MONTHS_AHEAD",
    "PartitionAction",
    "PruneReport",
    "PrunedPartition",
    "ensure_partitions",
    "prune_events",
]

log = logging.getLogger("wis2l_core.db.retention")

MONTHS_AHEAD = 3
"""Month partitions kept ready after the current one."""

_OTHERS = "a migration or another prune"
"""Who else may hold the lock a prune takes (the migrations')."""

PartitionAction = Literal["dropped", "would drop", "kept: unpublished events", "busy"]

_UTC = datetime.UTC


@attrs.frozen
class PrunedPartition:
    """One partition older than the retention, and what prune did with it.

    Attributes:
        name: the partition (``events_p202601``, or ``events_history``: the rows from
            before the table was partitioned).
        lower: its first instant (``None``: from the beginning).
        upper: the instant it ends (exclusive); every row in it is older.
        rows: how many rows it holds: exact when ``exact`` is true (written to the
            archive, or counted: a month whose rows were, or in a dry run would be, moved
            out of ``events_default``), else the planner's estimate (``-1``: never
            analyzed).
        bytes: its size on disk, indexes included, before the drop.
        action: ``"dropped"``, ``"would drop"`` (dry run), ``"kept: unpublished events"``
            or ``"busy"`` (its lock was not granted in time: run prune again).
        archive: the archive file written, if any.
        exact: ``rows`` is a count, not an estimate.
    """

    name: str
    lower: datetime.datetime | None
    upper: datetime.datetime
    rows: int
    bytes: int
    action: PartitionAction
    archive: Path | None = None
    exact: bool = False


@attrs.frozen
class PruneReport:
    """What :func:`prune_events` found and did.

    Attributes:
        cutoff: ``now - retention``: partitions ending at or before it were considered.
        dry_run: nothing was changed.
        partitions: the partitions older than the cutoff, oldest first.
        created: partitions created ahead during the run.
    """

    cutoff: datetime.datetime
    dry_run: bool
    partitions: tuple[PrunedPartition, ...]
    created: tuple[str, ...]

    @property
    def removed(self) -> tuple[PrunedPartition, ...]:
        """The partitions dropped (or, in a dry run, that would be)."""
        return tuple(p for p in self.partitions if p.action in ("dropped", "would drop"))

    @property
    def ok(self) -> bool:
        """No partition was left because its lock was busy."""
        return all(p.action != "busy" for p in self.partitions)


_Conn = psycopg.AsyncConnection[DictRow]


async def ensure_partitions(
    conn: _Conn, *, months_ahead: int = MONTHS_AHEAD, lock_timeout: float | None = None
) -> list[str]:
    """Create the month partitions of ``events`` from this month to ``months_ahead`` after.

    One round trip; a month already covered is left alone, so calling it often is cheap.
    Creating a partition takes a brief exclusive lock on ``events``.

    Args:
        conn: an autocommit connection (or one in a transaction, which it joins).
        months_ahead: months after the current one (UTC) to have ready, 0..120.
        lock_timeout: seconds to wait for the table's lock when a partition must be
            created (``None``: the session's setting); meanwhile queries on ``events``
            queue behind the request, so keep it short where traffic runs.

    Returns:
        The names of the partitions created (empty when all were there).

    Raises:
        ValidationError: ``months_ahead`` is out of range.
        SchemaMissing: the database is not migrated.
        ServiceUnavailable: the database does not answer, or the lock did not come within
            ``lock_timeout`` (nothing is created).
    """
    if not 0 <= months_ahead <= 120:
        raise ValidationError("months_ahead must be 0..120", field="months_ahead")
    with map_errors():
        async with conn.transaction():
            if lock_timeout is not None:
                await conn.execute(_set_lock_timeout(lock_timeout))
            cur = await conn.execute(
                _QUERIES["ensure_partitions"].text, {"months_ahead": months_ahead}
            )
            created = [str(row["name"]) for row in await cur.fetchall()]
    for name in created:
        log.info("created partition %s", name, extra={"partition": name})
    return created


_QUERIES = query_file("retention")


async def prune_events(
    database_url: str,
    *,
    retention: datetime.timedelta,
    dry_run: bool = False,
    archive_dir: Path | None = None,
    lock_timeout: float = 2.0,
    connect_timeout: float = 5.0,
    now: datetime.datetime | None = None,
) -> PruneReport:
    """Drop the partitions of ``events`` whose every row is older than ``retention``.

    A partition goes only when it ends at or before ``now - retention`` and holds no
    unpublished event (checked again under its lock, just before the drop). Dropping takes
    an exclusive lock on ``events`` for a few milliseconds; it waits at most
    ``lock_timeout`` seconds (a long transaction on ``events`` holds it off), and a
    partition whose lock did not come is reported ``"busy"`` and left for the next run.
    Prune and migrations exclude each other (the migration advisory lock).

    Args:
        database_url: the database (the server itself, not a transaction-mode pooler).
        retention: how long events are kept, e.g. ``timedelta(days=90)``.
        dry_run: report what would be dropped, rows of ``events_default`` included (and
            create nothing, archive nothing; an existing ``archive_dir`` is checked).
        archive_dir: write each partition to ``<archive_dir>/<name>.jsonl.gz`` (mode
            0600) before it is dropped (the folder is made 0700 when missing; an unsafe
            one is refused, a failed write drops nothing).
        lock_timeout: seconds to wait for the table's lock, per partition.
        connect_timeout: seconds to connect.
        now: the current time (tests); default the database's ``now()``.

    Returns:
        What was found and done.

    Raises:
        ValidationError: ``retention`` is not positive, or ``archive_dir`` is not safe:
            it (or the link naming it) belongs to another user, or others may write into
            it and it has no sticky bit. Raised before anything is dropped.
        SchemaMissing: the database is not migrated.
        ServiceUnavailable: the database cannot be reached.
        OSError: the archive could not be written (the partition is kept).
    """
    if retention <= datetime.timedelta(0):
        raise ValidationError("retention must be positive", field="retention")
    folder = None
    if archive_dir is not None:
        folder = await asyncio.to_thread(ArchiveFolder.open, archive_dir, create=not dry_run)
    try:
        return await _connect_and_prune(
            database_url,
            retention=retention,
            dry_run=dry_run,
            folder=folder,
            lock_timeout=lock_timeout,
            connect_timeout=connect_timeout,
            now=now,
        )
    finally:
        if folder is not None:
            folder.close()


async def _connect_and_prune(
    database_url: str,
    *,
    retention: datetime.timedelta,
    dry_run: bool,
    folder: ArchiveFolder | None,
    lock_timeout: float,
    connect_timeout: float,
    now: datetime.datetime | None,
) -> PruneReport:
    conn = await connect(
        database_url,
        application_name="wis2l-core prune",
        timeout=connect_timeout,
        row_factory=dict_row,
    )
    wait = max(lock_timeout, 30.0)
    async with conn:
        with map_errors():
            await conn.execute("SET TIME ZONE 'UTC'")
            async with advisory_lock(
                conn, MIGRATIONS, timeout=wait, holder=_OTHERS, scope="session"
            ):
                return await _prune(
                    conn,
                    retention=retention,
                    dry_run=dry_run,
                    folder=None if dry_run else folder,
                    lock_timeout=lock_timeout,
                    now=now,
                )


async def _prune(
    conn: _Conn,
    *,
    retention: datetime.timedelta,
    dry_run: bool,
    folder: ArchiveFolder | None,
    lock_timeout: float,
    now: datetime.datetime | None,
) -> PruneReport:
    if now is None:
        cur = await conn.execute("SELECT now() AS now")
        row = await cur.fetchone()
        assert row is not None
        now = row["now"]
    cutoff = now - retention
    created: Sequence[str] = ()
    unmade = dry_run  # the months of events_default are not partitions (yet)
    if not dry_run:
        try:
            created = await ensure_partitions(conn, lock_timeout=lock_timeout)
        except ServiceUnavailable as exc:
            if not isinstance(exc.__cause__, pg.LockNotAvailable):
                raise
            unmade = True
            log.warning("prune: events busy: partitions ahead not created; the next run will")
    cur = await conn.execute(_QUERIES["partitions"].text, {"cutoff": cutoff})
    rows = await cur.fetchall()
    if unmade:  # as ensure_partitions makes them of events_default (exact: true)
        cur = await conn.execute(_QUERIES["default_months"].text, {"cutoff": cutoff})
        rows += await cur.fetchall()
    found = sorted(
        (row for row in rows if row["upper_bound"] is not None and row["upper_bound"] <= cutoff),
        key=lambda row: row["upper_bound"],
    )
    done: list[PrunedPartition] = []
    for row in found:
        part = PrunedPartition(
            name=row["name"],
            lower=row["lower_bound"],
            upper=row["upper_bound"],
            rows=int(row["rows_estimate"]),
            bytes=int(row["bytes"]),
            action="would drop",
            exact=bool(row["exact"]),
        )
        if part.name in created:  # just made from events_default: never analyzed
            part = attrs.evolve(part, rows=await _count(conn, part.name), exact=True)
        if row["pending"]:
            done.append(attrs.evolve(part, action="kept: unpublished events"))
            continue
        if dry_run:
            done.append(part)
            continue
        if unmade and row["exact"]:  # still in events_default: its month was not made
            done.append(attrs.evolve(part, action="busy"))
            continue
        if folder is not None:
            path, count = await archive_partition(conn, part.name, folder)
            part = attrs.evolve(part, rows=count, archive=path, exact=True)
        done.append(attrs.evolve(part, action=await _drop(conn, part.name, lock_timeout)))
        log.info(
            "prune: %s %s",
            done[-1].action,
            part.name,
            extra={"partition": part.name, "action": done[-1].action},
        )
    return PruneReport(
        cutoff=cutoff, dry_run=dry_run, partitions=tuple(done), created=tuple(created)
    )


async def _count(conn: _Conn, name: str) -> int:
    query = pgsql.SQL("SELECT count(*) AS n FROM {}").format(pgsql.Identifier(name))
    cur = await conn.execute(query)
    row = await cur.fetchone()
    return int(row["n"]) if row is not None else 0


def _set_lock_timeout(seconds: float) -> pgsql.Composed:
    return pgsql.SQL("SET LOCAL lock_timeout = {}").format(
        pgsql.Literal(f"{max(1, int(seconds * 1000))}ms")
    )


async def _drop(conn: _Conn, name: str, lock_timeout: float) -> PartitionAction:
    """Detach, check again for unpublished rows under the lock, drop: one transaction."""
    table = pgsql.Identifier(name)
    try:
        async with conn.transaction():
            await conn.execute(_set_lock_timeout(lock_timeout))
            await conn.execute(pgsql.SQL("ALTER TABLE events DETACH PARTITION {}").format(table))
            cur = await conn.execute(_QUERIES["has_pending"].text, {"part": name})
            row = await cur.fetchone()
            if row is not None and row["pending"]:
                raise _Pending
            await conn.execute(pgsql.SQL("DROP TABLE {}").format(table))
    except _Pending:
        return "kept: unpublished events"
    except pg.LockNotAvailable:
        log.warning("prune: %s busy: lock not granted in %s s", name, lock_timeout)
        return "busy"
    return "dropped"


class _Pending(Exception):
    """Rolls the drop back: a row became unpublished-visible since the listing."""
