"""The migration runner behind ``wis.migrate()`` and ``wis2l db migrate`` / ``status``.

Files in ``sql/migrations`` are applied in order, each in its own transaction, and
recorded in ``wis2l_migrations`` (source, name, SHA-256 checksum, applied_at, duration);
then each app folder of ``Settings.migrations`` (``WIS2L_MIGRATIONS``) the same way, under
its own source name, so its numbering is independent of the library's. Each file's
transaction first takes a transaction-level advisory lock and checks again that the file
is still pending, so concurrent deploys apply each file exactly once: the second runner
waits (up to ``migrate_lock_timeout``), then finds the file applied. The lock lives and
dies with one transaction, so a transaction-mode pooler (PgBouncer) cannot leave it held
on a server connection; the callers still connect to ``Settings.direct_database_url``. A
file whose checksum differs from the recorded one stops everything with ``MigrationError``.
"""

from __future__ import annotations

import datetime
import functools
import logging
import re
import time
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import attrs
import psycopg
from psycopg.rows import DictRow, TupleRow, tuple_row

from wis2l_core.config import LIBRARY_SOURCE, MigrationSource
from wis2l_core.db.connect import connect
from wis2l_core.db.errors import map_errors
from wis2l_core.db.locks import MIGRATIONS, advisory_lock
from wis2l_core.db.sql import Migration, migrations
from wis2l_core.errors import (
    ConfigError,
    Conflict,
    MigrationError,
    SchemaMissing,
    ServiceUnavailable,
    ValidationError,
)

__all__ = [
    "MigrationStatus",
    "apply_migrations",
    "check_schema",
    "migration_status",
    "new_migration",
]

log = logging.getLogger("wis2l_core.db.migrate")

_Conn = psycopg.AsyncConnection[TupleRow]

# The table's first shape: sql/migrations/0003 adds ``source`` and the (source, name) key,
# so fresh and older databases reach the same shape through the same migration. Until
# 0003 is applied, every row is the library's.
_CREATE = """
CREATE TABLE IF NOT EXISTS wis2l_migrations (
    name        text PRIMARY KEY,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    duration_ms double precision NOT NULL
)
"""


@attrs.frozen
class MigrationStatus:
    """Where a database stands against the migration files.

    Names are the file's stem (``0001_initial_schema``) for the library's migrations and
    ``<source>/<stem>`` (``shop/0001_orders``) for an app folder's; the library's come
    first, then each app source in the configured order. Rows of a source that is not
    configured (any more) are not listed.

    Attributes:
        applied: names recorded in ``wis2l_migrations`` whose file is unchanged.
        pending: names of files not yet applied, in order.
        drifted: names whose file changed after it was applied (or whose file is gone).
    """

    applied: tuple[str, ...]
    pending: tuple[str, ...]
    drifted: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """No drift."""
        return not self.drifted


# Reads both shapes of the table: before 0003 there is no source column (library rows).
_APPLIED = (
    "SELECT coalesce(to_jsonb(m) ->> 'source', 'wis2l-core'), name, checksum"
    " FROM wis2l_migrations m ORDER BY 1, 2"
)


async def _applied(conn: _Conn) -> dict[str, dict[str, str]]:
    """``{source: {name: checksum}}`` of the recorded migrations."""
    cur = await conn.execute("SELECT to_regclass('wis2l_migrations') IS NOT NULL")
    row = await cur.fetchone()
    if row is None or not row[0]:
        return {}
    cur = await conn.execute(_APPLIED)
    found: dict[str, dict[str, str]] = {}
    for source, name, checksum in await cur.fetchall():
        found.setdefault(source, {})[name] = checksum
    return found


def _qualified(source: str, name: str) -> str:
    return name if source == LIBRARY_SOURCE else f"{source}/{name}"


_Files = list[tuple[str, tuple[Migration, ...]]]


def _files(directory: Path | None, sources: Sequence[MigrationSource]) -> _Files:
    """(source name, files) of the library, then of each app folder.

    Raises:
        ConfigError: an app folder is missing or holds a misnamed file.
    """
    found: _Files = [(LIBRARY_SOURCE, migrations(directory))]
    for source in sources:
        if not source.path.is_dir():
            raise ConfigError(
                f"WIS2L_MIGRATIONS: {source.name}: {source.path} is not a folder",
                variable="WIS2L_MIGRATIONS",
            )
        try:
            found.append((source.name, migrations(source.path)))
        except ValueError as exc:
            raise ConfigError(
                f"WIS2L_MIGRATIONS: {source.name}: {exc}", variable="WIS2L_MIGRATIONS"
            ) from None
    return found


def _compare(files: _Files, applied: dict[str, dict[str, str]]) -> MigrationStatus:
    done: list[str] = []
    pending: list[str] = []
    drifted: list[str] = []
    for source, source_files in files:
        recorded = applied.get(source, {})
        by_name = {m.name: m for m in source_files}
        for name, checksum in recorded.items():
            if name not in by_name or by_name[name].checksum != checksum:
                drifted.append(_qualified(source, name))
            else:
                done.append(_qualified(source, name))
        pending.extend(_qualified(source, m.name) for m in source_files if m.name not in recorded)
    return MigrationStatus(applied=tuple(done), pending=tuple(pending), drifted=tuple(drifted))


async def _connect(database_url: str, connect_timeout: float) -> _Conn:
    # Nothing prepared: the runner may talk to a transaction-mode pooler.
    return await connect(
        database_url,
        application_name="wis2l-core migrate",
        timeout=connect_timeout,
        prepared=False,
        row_factory=tuple_row,
    )


# Only the library's own rows (before 0003 there is no source column: all are the library's).
_SCHEMA_QUERY = (
    "SELECT current_setting('server_version') AS server_version,"
    " array(SELECT name FROM wis2l_migrations m"
    " WHERE coalesce(to_jsonb(m) ->> 'source', 'wis2l-core') = 'wis2l-core') AS applied"
)


async def check_schema(conn: psycopg.AsyncConnection[DictRow]) -> str:
    """Check in one round trip that every migration this library ships is applied.

    Health checks use it, so an app whose database was never migrated (or is behind the
    installed library) is reported unhealthy with the fix, not merely degraded.

    Returns:
        The server's version.

    Raises:
        SchemaMissing: a migration is not applied; the message names ``wis2l db migrate``.
        ServiceUnavailable: the database does not answer.
    """
    with map_errors():
        cur = await conn.execute(_SCHEMA_QUERY, prepare=True)
        row = await cur.fetchone()
    if row is None:  # pragma: no cover - the query always returns one row
        raise ServiceUnavailable("database: no answer to the schema check", service="database")
    missing = [name for name in _shipped() if name not in row["applied"]]
    if missing:
        raise SchemaMissing(
            f"{len(missing)} migration(s) not applied, from {missing[0]}:"
            " run `wis2l db migrate` (or `await wis.migrate()`)",
            migration=missing[0],
        )
    return str(row["server_version"])


@functools.cache
def _shipped() -> tuple[str, ...]:
    return tuple(m.name for m in migrations())


async def migration_status(
    database_url: str,
    *,
    directory: Path | None = None,
    sources: Sequence[MigrationSource] = (),
    connect_timeout: float = 5.0,
) -> MigrationStatus:
    """Compare the database's ``wis2l_migrations`` with the files.

    Args:
        database_url: the database.
        directory: the library's migrations (default: the package's ``sql/migrations``).
        sources: the app's own folders (``Settings.migrations``), listed after the library's.
        connect_timeout: seconds to connect.

    Raises:
        ConfigError: an app folder is missing or holds a misnamed file.
        ServiceUnavailable: the database cannot be reached.
    """
    files = _files(directory, sources)
    async with await _connect(database_url, connect_timeout) as conn:
        with map_errors():
            return _compare(files, await _applied(conn))


async def apply_migrations(
    database_url: str,
    *,
    directory: Path | None = None,
    sources: Sequence[MigrationSource] = (),
    lock_timeout: float = 60.0,
    connect_timeout: float = 5.0,
) -> list[str]:
    """Apply every pending migration, in order; return the names applied.

    The library's come first, then each app folder of ``sources`` in order, each file in
    its own transaction, all under one advisory lock. App names come back as
    ``<source>/<stem>``.

    Args:
        database_url: the database.
        directory: the library's migrations (default: the package's ``sql/migrations``).
        sources: the app's own folders (``Settings.migrations``).
        lock_timeout: seconds to wait for another runner's lock.
        connect_timeout: seconds to connect.

    Raises:
        ConfigError: an app folder is missing or holds a misnamed file (nothing is applied).
        MigrationError: an applied file changed (drift), or a file failed to apply (its
            transaction is rolled back and the files after it are not run).
        ServiceUnavailable: the database cannot be reached, or another runner held the
            lock for longer than ``lock_timeout`` seconds.
    """
    files = _files(directory, sources)
    applied_now: list[str] = []
    async with await _connect(database_url, connect_timeout) as conn:
        with map_errors():
            async with _locked(conn, lock_timeout):
                await conn.execute(_CREATE)
                status = _compare(files, await _applied(conn))
            if status.drifted:
                raise MigrationError(
                    f"migration {status.drifted[0]} changed after it was applied "
                    "(checksum differs); migrations are forward-only: restore the file "
                    "and add a new one",
                    migration=status.drifted[0],
                )
            for source, source_files in files:
                for migration in source_files:
                    name = _qualified(source, migration.name)
                    if name in status.pending and await _apply(
                        conn, source, migration, lock_timeout
                    ):
                        applied_now.append(name)
    return applied_now


def _locked(conn: _Conn, lock_timeout: float) -> AbstractAsyncContextManager[None]:
    """A transaction holding the migration lock (released when it ends, whatever happens)."""
    return advisory_lock(conn, MIGRATIONS, timeout=lock_timeout, holder="another migration")


_HAS_SOURCE = (
    "SELECT EXISTS (SELECT FROM pg_attribute"
    " WHERE attrelid = 'wis2l_migrations'::regclass AND attname = 'source' AND NOT attisdropped)"
)


async def _apply(
    conn: _Conn,
    source: str,
    migration: Migration,
    lock_timeout: float,
) -> bool:
    """Apply ``migration`` under the lock unless another runner did meanwhile (``False``)."""
    name = _qualified(source, migration.name)
    start = time.perf_counter()
    try:
        async with _locked(conn, lock_timeout):
            recorded = (await _applied(conn)).get(source, {})
            if migration.name in recorded:
                if recorded[migration.name] != migration.checksum:
                    raise MigrationError(
                        f"migration {name} was applied meanwhile with another checksum",
                        migration=name,
                    )
                return False
            start = time.perf_counter()
            await conn.execute(migration.text.encode())
            cur = await conn.execute(_HAS_SOURCE)
            row = await cur.fetchone()
            duration = (time.perf_counter() - start) * 1000
            if row is not None and row[0]:
                await conn.execute(
                    "INSERT INTO wis2l_migrations (source, name, checksum, duration_ms)"
                    " VALUES (%s, %s, %s, %s)",
                    (source, migration.name, migration.checksum, duration),
                )
            else:  # the library's 0001/0002, before 0003 added the column
                await conn.execute(
                    "INSERT INTO wis2l_migrations (name, checksum, duration_ms)"
                    " VALUES (%s, %s, %s)",
                    (migration.name, migration.checksum, duration),
                )
    except psycopg.Error as exc:
        if isinstance(exc, psycopg.OperationalError):
            raise
        raise MigrationError(f"migration {name} failed: {exc}", migration=name) from exc
    log.info(
        "applied migration %s in %.1f ms",
        name,
        (time.perf_counter() - start) * 1000,
        extra={"migration": name, "source": source},
    )
    return True


_SLUG = re.compile(r"[a-z0-9]+(?:_[a-z0-9]+)*")
_NUMBERED = re.compile(r"^(\d{4})_")

_HEADER = """\
-- {source} {number}: {title}
-- Created by `wis2l db new` on {date}. Applied by `wis2l db migrate` (or `await
-- wis.migrate()`) in its own transaction, after the library's migrations and recorded in
-- wis2l_migrations under source {source!r}.
-- Forward-only: never edit this file once applied anywhere; add a new one instead.

"""


def new_migration(directory: Path, name: str, *, source: str | None = None) -> Path:
    """Write the next numbered, empty migration ``NNNN_<name>.sql`` into ``directory``.

    The number is one more than the highest ``NNNN_`` file in the folder (``0001`` in an
    empty or new folder, which is created). The file is created exclusively: an existing
    file is never overwritten.

    Args:
        directory: the app's migrations folder.
        name: a slug, ``[a-z0-9]+(_[a-z0-9]+)*``; ``-`` is read as ``_``.
        source: the source name the header mentions (default: the folder's name).

    Returns:
        The new file's path.

    Raises:
        ValidationError: ``name`` is not a slug, or the folder is already at ``9999``.
        Conflict: the file appeared meanwhile (another ``wis2l db new`` won the race).
    """
    slug = name.strip().replace("-", "_")
    if len(slug) > 64 or _SLUG.fullmatch(slug) is None:
        raise ValidationError(
            f"migration name {name!r} is not a slug: use lowercase letters, digits and '_' "
            "(e.g. add_orders)",
            field="name",
        )
    numbers = [
        int(m.group(1))
        for p in (directory.glob("*.sql") if directory.is_dir() else ())
        if (m := _NUMBERED.match(p.name))
    ]
    number = max(numbers, default=0) + 1
    if number > 9999:
        raise ValidationError(f"{directory}: no number left after 9999", field="name")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{number:04d}_{slug}.sql"
    header = _HEADER.format(
        source=source or directory.resolve().name,
        number=f"{number:04d}",
        title=slug.replace("_", " "),
        date=datetime.date.today().isoformat(),
    )
    try:
        with path.open("x", encoding="utf-8") as out:
            out.write(header)
    except FileExistsError:
        raise Conflict(f"{path} already exists: not overwritten", field="name") from None
    return path
