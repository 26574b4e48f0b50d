"""The migration runner behind ``wis.migrate()`` and ``wis2l db migrate`` / ``status``.

Files in ``sql/migrations`` are applied in order, each in its own transaction, and
recorded in ``wis2l_migrations`` (name, SHA-256 checksum, applied_at, duration). A
session-level advisory lock makes concurrent deploys apply each file exactly once: the
second runner waits (up to ``migrate_lock_timeout``), then finds nothing pending. A file
whose checksum differs from the recorded one stops everything with ``MigrationError``.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import attrs
import psycopg
from psycopg import errors as pg
from psycopg.rows import DictRow

from wis2l_core.db.errors import map_errors
from wis2l_core.db.sql import Migration, migrations
from wis2l_core.errors import MigrationError, SchemaMissing, ServiceUnavailable

__all__ = ["MigrationStatus", "apply_migrations", "check_schema", "migration_status"]

log = logging.getLogger("wis2l_core.db.migrate")

# pg_advisory_lock key shared by every wis2l-core migrator (any fixed bigint would do).
LOCK_KEY = 0x1E6D_0A2C_5B3F_7A11

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


async def _applied(conn: psycopg.AsyncConnection[tuple[str, str]]) -> dict[str, str]:
    cur = await conn.execute("SELECT to_regclass('wis2l_migrations') IS NOT NULL")
    row = await cur.fetchone()
    if row is None or not row[0]:
        return {}
    cur = await conn.execute("SELECT name, checksum FROM wis2l_migrations ORDER BY name")
    return dict(await cur.fetchall())


def _compare(files: Sequence[Migration], applied: dict[str, str]) -> MigrationStatus:
    by_name = {m.name: m for m in files}
    drifted = tuple(
        name
        for name, checksum in applied.items()
        if name not in by_name or by_name[name].checksum != checksum
    )
    return MigrationStatus(
        applied=tuple(n for n in applied if n not in drifted),
        pending=tuple(m.name for m in files if m.name not in applied),
        drifted=drifted,
    )


async def _connect(
    database_url: str, connect_timeout: float
) -> psycopg.AsyncConnection[tuple[str, str]]:
    with map_errors():
        return await psycopg.AsyncConnection.connect(
            database_url,
            autocommit=True,
            connect_timeout=max(1, round(connect_timeout)),
            application_name="wis2l-core migrate",
        )


_SCHEMA_QUERY = (
    "SELECT current_setting('server_version') AS server_version,"
    " array(SELECT name FROM wis2l_migrations) AS applied"
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
    database_url: str, *, directory: Path | None = None, connect_timeout: float = 5.0
) -> MigrationStatus:
    """Compare the database's ``wis2l_migrations`` with the files.

    Raises:
        ServiceUnavailable: the database cannot be reached.
    """
    files = migrations(directory)
    async with await _connect(database_url, connect_timeout) as conn:
        with map_errors():
            return _compare(files, await _applied(conn))


async def apply_migrations(
    database_url: str,
    *,
    directory: Path | None = None,
    lock_timeout: float = 60.0,
    connect_timeout: float = 5.0,
) -> list[str]:
    """Apply every pending migration, in order; return the names applied.

    Raises:
        MigrationError: an applied file changed (drift), or a file failed to apply (its
            transaction is rolled back and the files after it are not run).
        ServiceUnavailable: the database cannot be reached, or another runner held the
            lock for longer than ``lock_timeout`` seconds.
    """
    files = migrations(directory)
    applied_now: list[str] = []
    async with await _connect(database_url, connect_timeout) as conn:
        with map_errors():
            await conn.execute(f"SET lock_timeout = {int(lock_timeout * 1000)}")
            try:
                await conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
            except pg.LockNotAvailable as exc:
                raise ServiceUnavailable(
                    f"another migration held the lock for more than {lock_timeout} s",
                    service="database",
                ) from exc
            await conn.execute("SET lock_timeout = 0")
            try:
                await conn.execute(_CREATE)
                status = _compare(files, await _applied(conn))
                if status.drifted:
                    raise MigrationError(
                        f"migration {status.drifted[0]} changed after it was applied "
                        "(checksum differs); migrations are forward-only: restore the file "
                        "and add a new one",
                        migration=status.drifted[0],
                    )
                for migration in files:
                    if migration.name in status.pending:
                        await _apply(conn, migration)
                        applied_now.append(migration.name)
            finally:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    return applied_now


async def _apply(conn: psycopg.AsyncConnection[tuple[str, str]], migration: Migration) -> None:
    start = time.perf_counter()
    try:
        async with conn.transaction():
            await conn.execute(migration.text.encode())
            await conn.execute(
                "INSERT INTO wis2l_migrations (name, checksum, duration_ms) VALUES (%s, %s, %s)",
                (migration.name, migration.checksum, (time.perf_counter() - start) * 1000),
            )
    except psycopg.Error as exc:
        if isinstance(exc, psycopg.OperationalError):
            raise
        raise MigrationError(
            f"migration {migration.name} failed: {exc}", migration=migration.name
        ) from exc
    log.info(
        "applied migration %s in %.1f ms",
        migration.name,
        (time.perf_counter() - start) * 1000,
        extra={"migration": migration.name},
    )
