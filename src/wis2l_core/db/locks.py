"""Every advisory-lock key the library takes, and the one way to wait for one.

PostgreSQL's advisory locks live in one key space per database, shared with the app: the
keys are fixed bigints, listed here so that two features never pick the same one.
:func:`advisory_lock` holds a key for a block, waiting at most ``timeout`` seconds and
failing with ``ServiceUnavailable`` (cause ``LockNotAvailable``) rather than queueing
forever behind another holder.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import psycopg
from psycopg import errors as pg

from wis2l_core.errors import ServiceUnavailable

__all__ = ["MIGRATIONS", "OUTBOX", "SEED", "advisory_lock"]

MIGRATIONS = 0x1E6D_0A2C_5B3F_7A11
"""Held by every migration runner (one transaction per file) and for a whole prune, so
the two exclude each other."""
OUTBOX = int.from_bytes(b"wobx", "big")
"""The first key of the outbox partitions' locks ``(OUTBOX, partition)``."""
SEED = 0x1E6D_0A2C_5EED_0001
"""Held while ``wis2l dev seed`` writes the demo data."""


@asynccontextmanager
async def advisory_lock(
    conn: psycopg.AsyncConnection[Any],
    key: int,
    *,
    timeout: float,
    holder: str,
    scope: Literal["transaction", "session"] = "transaction",
) -> AsyncIterator[None]:
    """Hold ``key`` for the block, waiting at most ``timeout`` seconds for it.

    ``scope="transaction"`` opens a transaction on ``conn`` and takes the lock in it: it
    goes when the transaction ends, whatever happens (safe behind a transaction-mode
    pooler). ``scope="session"`` takes it on the session (``conn`` in autocommit) and
    releases it when the block ends. Either way ``lock_timeout`` is back to 0 (no limit)
    for the statements of the block.

    Args:
        conn: the connection (autocommit for the session scope).
        key: one of this module's keys.
        timeout: seconds to wait for another holder (``0``: no limit).
        holder: who else may hold it, for the error ("another migration").

    Raises:
        ServiceUnavailable: the lock did not come within ``timeout`` seconds.
    """
    if scope == "transaction":
        async with conn.transaction():
            await _take(conn, key, timeout, holder, session=False)
            yield
        return
    await _take(conn, key, timeout, holder, session=True)
    try:
        yield
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


async def _take(
    conn: psycopg.AsyncConnection[Any], key: int, timeout: float, holder: str, *, session: bool
) -> None:
    local = "" if session else " LOCAL"
    await conn.execute(f"SET{local} lock_timeout = {int(timeout * 1000)}")
    try:
        lock = "pg_advisory_lock" if session else "pg_advisory_xact_lock"
        await conn.execute(f"SELECT {lock}(%s)", (key,))
    except pg.LockNotAvailable as exc:
        raise ServiceUnavailable(
            f"{holder} held the lock for more than {timeout} s", service="database"
        ) from exc
    finally:
        if session:  # a failed statement inside a transaction leaves nothing to reset
            await conn.execute("SET lock_timeout = 0")
    if not session:
        await conn.execute("SET LOCAL lock_timeout = 0")
