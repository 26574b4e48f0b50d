"""Connecting to PostgreSQL: the pool's connection settings and every one-off connection.

The pool (:mod:`wis2l_core.db.pool`) connects with :func:`connect_kwargs`. Everything
else that needs a connection of its own (the start-up probe, ``wis2l health``, the
outbox's ``LISTEN`` session, migrations, prune, ``wis2l db check``) opens it here:
:func:`connect_to` with the settings' connection options, :func:`connect` for a URL
given as is. Either names the connection (``application_name``, seen in
``pg_stat_activity``), bounds the wait (``connect_timeout`` in whole seconds, at least
1), and raises a failure to connect as our ``ServiceUnavailable`` (through
:func:`~wis2l_core.db.errors.map_errors`), the driver's error kept as ``__cause__``.
"""

from __future__ import annotations

from typing import Any, TypeVar

import psycopg
from psycopg.rows import AsyncRowFactory, DictRow, dict_row

from wis2l_core._net import whole_seconds
from wis2l_core.config import Settings
from wis2l_core.db.errors import map_errors
from wis2l_core.telemetry._db import cursor_class

__all__ = ["APPLICATION_NAME", "behind_pooler", "connect", "connect_kwargs", "connect_to"]

APPLICATION_NAME = "wis2l-core"
"""The pool's ``application_name``; one-off connections add what they are for."""

_Row = TypeVar("_Row")


def behind_pooler(settings: Settings) -> bool:
    """True if ``database_url`` is taken to be a pooler such as PgBouncer, not the server.

    That is when ``DATABASE_DIRECT_URL`` names the server separately, or server-side
    prepared statements are turned off (``WIS2L_DB_PREPARED_STATEMENTS=false``).
    """
    return settings.database_direct_url is not None or not settings.db_prepared_statements


def connect_kwargs(settings: Settings, *, direct: bool = False) -> dict[str, Any]:
    """Connection keyword arguments shared by the pool and :func:`connect_to`.

    ``statement_timeout`` is sent as the ``options`` startup parameter only to the server
    itself: PgBouncer refuses that parameter ("unsupported startup parameter: options"),
    and a ``SET`` on a transaction-pooled connection would leak to other clients. Behind
    a pooler (:func:`behind_pooler`) it is left out; set it on the role instead
    (``ALTER ROLE app SET statement_timeout = '30s'``), see docs/operations.md. A pool
    whose option is refused anyway drops it and logs a warning (``Pool.new_connection``).

    Args:
        settings: the settings.
        direct: the connection goes to ``settings.direct_database_url`` (the server).
    """
    kwargs: dict[str, Any] = {
        "row_factory": dict_row,
        # Reads are one statement: autocommit saves the BEGIN/COMMIT round trips.
        # Writes open explicit transactions (see repository.py).
        "autocommit": True,
        "connect_timeout": whole_seconds(settings.db_connect_timeout),
        "application_name": APPLICATION_NAME,
        # Every statement in a span when an SDK records (wis2l_core.telemetry._db).
        "cursor_factory": cursor_class(settings.otel_db_query_text, settings.sql_comments),
    }
    if settings.db_statement_timeout > 0 and (direct or not behind_pooler(settings)):
        timeout_ms = int(settings.db_statement_timeout * 1000)
        kwargs["options"] = f"-c statement_timeout={timeout_ms}"
    if not settings.db_prepared_statements:
        # None disables psycopg's preparing altogether, ``prepare=True`` included.
        kwargs["prepare_threshold"] = None
    return kwargs


async def connect_to(
    settings: Settings,
    *,
    url: str | None = None,
    application_name: str = APPLICATION_NAME,
    timeout: float | None = None,
) -> psycopg.AsyncConnection[DictRow]:
    """A connection of its own, made as the pool makes its connections (:func:`connect_kwargs`).

    Args:
        settings: the settings.
        url: where to connect (default ``settings.database_url``); the options stay the
            pool's, so a pooler's URL is fine.
        application_name: what the connection is for.
        timeout: seconds to connect (default ``settings.db_connect_timeout``).

    Raises:
        ServiceUnavailable: the database cannot be reached.
    """
    kwargs = connect_kwargs(settings) | {"application_name": application_name}
    if timeout is not None:
        kwargs["connect_timeout"] = whole_seconds(timeout)
    with map_errors():
        return await psycopg.AsyncConnection.connect(url or settings.database_url, **kwargs)


async def connect(
    url: str,
    *,
    application_name: str,
    timeout: float,
    row_factory: AsyncRowFactory[_Row],
    autocommit: bool = True,
    prepared: bool = True,
) -> psycopg.AsyncConnection[_Row]:
    """A connection of its own to ``url`` as given (the tools' entry points take a URL).

    Args:
        url: the database.
        application_name: what the connection is for (``"wis2l-core migrate"``).
        timeout: seconds to connect.
        row_factory: the rows' shape (``dict_row``, ``tuple_row``).
        autocommit: each statement commits (open transactions explicitly).
        prepared: let psycopg prepare repeated statements on the server; ``False`` for
            a connection that may go through a transaction-mode pooler.

    Raises:
        ServiceUnavailable: the database cannot be reached.
    """
    kwargs: dict[str, Any] = {}
    if not prepared:
        kwargs["prepare_threshold"] = None  # nothing prepared, ``prepare=True`` included
    with map_errors():
        return await psycopg.AsyncConnection.connect(
            url,
            autocommit=autocommit,
            row_factory=row_factory,
            connect_timeout=whole_seconds(timeout),
            application_name=application_name,
            **kwargs,
        )
