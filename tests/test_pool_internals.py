"""The private parts of psycopg_pool the pool relies on are all where it expects them.

db/pool.py's lock-free borrow path, its failover drain and its reconnect pace use
psycopg_pool's private attributes, all behind ``db/_pool_internals``. When a psycopg_pool
release moves one, the first test fails naming it (not an AttributeError deep in a
borrow): that file is the one to update, with the pin in pyproject.toml.
"""

import re
from collections import deque
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import psycopg
import psycopg_pool
from psycopg_pool import AsyncConnectionPool

from wis2l_core import Settings
from wis2l_core.db import pool as pool_module
from wis2l_core.db._pool_internals import (
    CONNECTION_ATTRIBUTES,
    METHODS,
    POOL_ATTRIBUTES,
    check,
)
from wis2l_core.db.pool import Database


async def test_the_installed_psycopg_pool_has_every_private_part_the_pool_uses(
    wis2l_settings: Settings,
) -> None:
    db = Database(wis2l_settings)
    await db.open()
    try:
        pool = db.pool
        conn = await pool.getconn()
        try:
            problems = check(pool, conn)
        finally:
            await pool.putconn(conn)
    finally:
        await db.close()
    assert problems == [], (
        f"psycopg_pool {psycopg_pool.__version__} changed: {'; '.join(problems)};"
        " update src/wis2l_core/db/_pool_internals.py"
    )


async def test_a_changed_psycopg_pool_is_named_attribute_by_attribute(
    wis2l_settings: Settings,
) -> None:
    class Changed(AsyncConnectionPool[Any]):
        async def _putconn(self, conn: Any) -> None:  # lost its from_getconn parameter
            pass

    pool = Changed(wis2l_settings.database_url, min_size=1, open=False)
    await pool.open()
    try:
        del pool._waiting
        problems = check(pool, cast(psycopg.AsyncConnection[Any], SimpleNamespace()))
    finally:
        pool._waiting = deque()
        await pool.close()
    assert problems[0] == "AsyncConnectionPool._waiting is missing"
    assert len(problems) == 1 + len(CONNECTION_ATTRIBUTES) + 1
    for name in CONNECTION_ATTRIBUTES:
        assert f"a pooled connection's {name} is missing" in problems
    assert problems[-1] == "Changed._putconn() takes (conn), expected (conn, from_getconn)"
    assert len(POOL_ATTRIBUTES) > 10


def test_db_pool_touches_no_private_part_of_psycopg_pool_itself() -> None:
    """Everything private of psycopg_pool goes through the adapter, nothing around it.

    (``Database._pool`` is the database's own attribute, so ``_pool`` is not looked for.)
    """
    source = Path(pool_module.__file__ or "").read_text()
    private = {*POOL_ATTRIBUTES, *CONNECTION_ATTRIBUTES, *METHODS} - {"_pool"}
    used = sorted(name for name in private if re.search(rf"\.{name}\b", source))
    assert used == []
    assert "pool_async" not in source
