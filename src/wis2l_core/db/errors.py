"""Turning psycopg exceptions into wis2l-core errors, cause kept: the one place it happens.

Code that talks to PostgreSQL wraps the calls in :func:`map_errors` (as httpx's
``map_httpcore_exceptions``); :func:`translate` is the table behind it.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from types import TracebackType

import psycopg
import psycopg_pool
from psycopg import errors as pg

from wis2l_core.errors import (
    Conflict,
    NotFound,
    SchemaMissing,
    ServiceUnavailable,
    ValidationError,
    Wis2lError,
)

__all__ = ["SchemaMissing", "map_errors", "translate"]


# constraint name -> the field a caller passed
_UNIQUE_FIELDS = {
    "users_email_key": "email",
    "users_subject_key": "subject",
    "templates_slug_key": "slug",
    "projects_slug_key": "slug",
    "design_tokens_project_name_key": "name",
}

_FOREIGN_KEYS = {
    "projects_owner_id_fkey": "owner_id",
    "projects_template_id_fkey": "template_id",
    "components_project_id_fkey": "project_id",
    "design_tokens_project_id_fkey": "project_id",
    "builds_project_id_fkey": "project_id",
    "deployments_project_id_fkey": "project_id",
    "deployments_build_id_fkey": "build_id",
    "events_project_id_fkey": "project_id",
}


def _check_field(constraint: str | None, table: str | None) -> str | None:
    # CHECK constraints are named <table>_<column>_check by PostgreSQL.
    if not constraint or not table or not constraint.startswith(table + "_"):
        return None
    return constraint[len(table) + 1 :].removesuffix("_check") or None


def translate(exc: BaseException) -> Wis2lError:
    """The wis2l-core error for a psycopg (or pool) exception; the caller raises it ``from``.

    Unique violation -> ``Conflict``; missing parent -> ``NotFound``; CHECK, NOT NULL or a
    bad value -> ``ValidationError``; lost connection, pool timeout, shutdown or a
    cancelled statement -> ``ServiceUnavailable``.
    """
    if isinstance(exc, Wis2lError):
        return exc
    if isinstance(exc, pg.UniqueViolation):
        diag = exc.diag
        field = _UNIQUE_FIELDS.get(diag.constraint_name or "")
        what = field or diag.constraint_name or "a unique key"
        return Conflict(f"{diag.table_name or 'row'}: {what} is already taken", field=field)
    if isinstance(exc, pg.ForeignKeyViolation):
        diag = exc.diag
        field = _FOREIGN_KEYS.get(diag.constraint_name or "")
        return NotFound(f"{field or diag.constraint_name}: the referenced row does not exist")
    if isinstance(exc, pg.CheckViolation | pg.NotNullViolation):
        diag = exc.diag
        field = diag.column_name or _check_field(diag.constraint_name, diag.table_name)
        return ValidationError(
            f"{diag.table_name or 'row'}: {field or diag.constraint_name} is not valid",
            field=field,
        )
    if isinstance(exc, pg.UndefinedTable | pg.UndefinedFunction | pg.UndefinedColumn):
        return SchemaMissing(
            f"the database schema is missing or out of date ({exc.diag.message_primary}):"
            " run `wis2l db migrate` (or `await wis.migrate()`)"
        )
    if isinstance(exc, psycopg.DataError | pg.InvalidTextRepresentation):
        return ValidationError(f"a value was refused by the database: {exc}")
    if isinstance(exc, psycopg_pool.PoolTimeout):
        return ServiceUnavailable(
            f"database: no free connection in time ({exc})", service="database"
        )
    if isinstance(exc, psycopg_pool.PoolClosed):
        return ServiceUnavailable("database: the pool is closed", service="database")
    if isinstance(exc, pg.ReadOnlySqlTransaction):  # a standby, e.g. after a failover
        return ServiceUnavailable(
            f"database: the server is read-only, a standby? ({exc})", service="database"
        )
    if isinstance(exc, pg.QueryCanceled):
        return ServiceUnavailable(f"database: statement cancelled ({exc})", service="database")
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return ServiceUnavailable(f"database unavailable: {exc}", service="database")
    return Wis2lError(f"database error: {type(exc).__name__}: {exc}")


class _MapErrors(AbstractContextManager[None]):
    """Stateless, so one instance serves every block (cheaper than a generator)."""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(exc, psycopg.Error):  # psycopg_pool's errors subclass it too
            raise translate(exc) from exc


_MAP_ERRORS = _MapErrors()


def map_errors() -> AbstractContextManager[None]:
    """Raise psycopg and psycopg_pool exceptions from the block as wis2l-core errors.

    ``with map_errors(): ...`` around every driver call: the one translation point (see
    :func:`translate` for the table). Cancellation and our own errors pass through
    untouched; the driver's exception is kept as ``__cause__``.
    """
    return _MAP_ERRORS
