"""One-off connections (db.connect) and the advisory locks (db.locks), on the real server."""

import functools
from typing import Literal

import attrs
import psycopg
import pytest
from psycopg.rows import dict_row, tuple_row

from wis2l_core import Settings
from wis2l_core._net import whole_seconds
from wis2l_core.db.connect import connect, connect_to
from wis2l_core.db.locks import MIGRATIONS, OUTBOX, SEED, advisory_lock
from wis2l_core.errors import ServiceUnavailable


@pytest.mark.parametrize(("seconds", "whole"), [(0.0, 1), (0.2, 1), (1.4, 1), (2.6, 3), (30, 30)])
def test_a_connect_timeout_is_whole_seconds_never_zero(seconds: float, whole: int) -> None:
    assert whole_seconds(seconds) == whole  # libpq reads 0 as "wait forever"


async def test_connect_names_the_connection_and_shapes_its_rows(wis2l_database_url: str) -> None:
    async with await connect(
        wis2l_database_url,
        application_name="wis2l-core test",
        timeout=2,
        prepared=False,
        row_factory=dict_row,
    ) as conn:
        assert conn.autocommit
        assert conn.prepare_threshold is None
        cur = await conn.execute("SELECT current_setting('application_name') AS name")
        assert await cur.fetchone() == {"name": "wis2l-core test"}
    async with await connect(
        wis2l_database_url, application_name="t", timeout=2, autocommit=False, row_factory=tuple_row
    ) as conn:
        assert not conn.autocommit
        assert conn.prepare_threshold == 5  # psycopg's default
        cur = await conn.execute("SELECT 1")
        assert await cur.fetchone() == (1,)


async def test_connect_to_uses_the_pools_options(wis2l_settings: Settings) -> None:
    settings = attrs.evolve(wis2l_settings, db_statement_timeout=7.0)
    async with await connect_to(settings, application_name="wis2l-core probe") as conn:
        cur = await conn.execute(
            "SELECT current_setting('statement_timeout') AS st,"
            " current_setting('application_name') AS name"
        )
        assert await cur.fetchone() == {"st": "7s", "name": "wis2l-core probe"}


async def test_a_failed_connection_is_service_unavailable_with_the_drivers_cause(
    wis2l_settings: Settings, unused_tcp_port: int
) -> None:
    url = f"postgresql://nobody@127.0.0.1:{unused_tcp_port}/none"
    with pytest.raises(ServiceUnavailable) as info:
        await connect(url, application_name="t", timeout=1, row_factory=dict_row)
    assert info.value.service == "database"
    assert isinstance(info.value.__cause__, psycopg.OperationalError)
    with pytest.raises(ServiceUnavailable) as info:
        await connect_to(attrs.evolve(wis2l_settings, database_url=url), timeout=0.5)
    assert isinstance(info.value.__cause__, psycopg.OperationalError)


def test_the_lock_keys_are_distinct() -> None:
    assert len({MIGRATIONS, OUTBOX, SEED}) == 3


async def _lock_timeout(conn: psycopg.AsyncConnection[object]) -> object:
    cur = await conn.execute("SELECT current_setting('lock_timeout')")
    row = await cur.fetchone()
    assert isinstance(row, tuple)
    return row[0]


@pytest.mark.parametrize("scope", ["transaction", "session"])
async def test_an_advisory_lock_held_elsewhere_is_service_unavailable_naming_the_holder(
    wis2l_database_url: str, scope: Literal["transaction", "session"]
) -> None:
    async with (
        await psycopg.AsyncConnection.connect(wis2l_database_url, autocommit=True) as holder,
        await psycopg.AsyncConnection.connect(wis2l_database_url, autocommit=True) as conn,
    ):
        lock = functools.partial(
            advisory_lock, conn, MIGRATIONS, timeout=0.2, holder="the holder", scope=scope
        )
        await holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATIONS,))
        with pytest.raises(
            ServiceUnavailable, match=r"the holder held the lock for more than 0\.2 s"
        ):
            async with lock():
                pytest.fail("the lock was granted")
        assert await _lock_timeout(conn) == "0"  # no limit left behind
        await holder.execute("SELECT pg_advisory_unlock(%s)", (MIGRATIONS,))
        async with lock():
            assert await _lock_timeout(conn) == "0"  # the block's statements wait as usual
            cur = await holder.execute("SELECT pg_try_advisory_lock(%s)", (MIGRATIONS,))
            assert await cur.fetchone() == (False,)
        cur = await holder.execute("SELECT pg_try_advisory_lock(%s)", (MIGRATIONS,))
        assert await cur.fetchone() == (True,)  # released when the block ended
