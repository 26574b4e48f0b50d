"""Fixtures of the re-collected modules: the synchronous API behind the names the
asynchronous tests use (``wis``, ``client``); see _adapter.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import psycopg
import pytest
from tests.sync._adapter import Async

from wis2l_core import Settings
from wis2l_core.sync import RedisClient, Wis2l
from wis2l_core.testing.plugin import drop_stream
from wis2l_core.testing.servers import TemplateDatabase


@pytest.fixture(scope="module")
def _module_database(wis2l_template: TemplateDatabase) -> Iterator[str]:
    """One migrated database per module (cloning and dropping one per test cost ~2 s)."""
    url = wis2l_template.clone()
    yield url
    wis2l_template.drop(url)


@pytest.fixture
def wis2l_database_url(_module_database: str) -> str:
    """The module's database, emptied: every row of every table but the migrations' is
    deleted, so each test starts as on a fresh clone of the template."""
    with psycopg.connect(_module_database, autocommit=True) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables"
                " WHERE schemaname = 'public' AND tablename <> 'wis2l_migrations'"
                " AND NOT EXISTS (SELECT FROM pg_inherits i"
                "  WHERE i.inhrelid = format('%I.%I', schemaname, tablename)::regclass)"
            )
        ]
        with conn.transaction():  # DELETE: a TRUNCATE of eight tables takes ~0.2 s
            for table in tables:
                conn.execute(f"DELETE FROM {table}")
    return _module_database


@pytest.fixture
def sync_wis(wis2l_settings: Settings) -> Iterator[Wis2l]:
    """A started synchronous runtime on this test's database (no outbox relay: these tests
    read the outbox itself; test_runtime.py checks the relay); closed after."""
    with Wis2l(wis2l_settings, relay=False) as runtime:
        yield runtime
    asyncio.run(drop_stream(wis2l_settings))


@pytest.fixture
def wis(sync_wis: Wis2l) -> Async:
    """The synchronous runtime, awaited by the re-collected asynchronous tests."""
    return Async(sync_wis)


@pytest.fixture
def client(settings: Settings) -> Iterator[Async]:
    """An open synchronous RedisClient; the test's keys are deleted afterwards."""
    client = RedisClient(settings)
    client.open()
    yield Async(client)
    for key in client.redis.scan_iter(match=f"{settings.namespace}:*", count=500):
        client.redis.delete(key)
    client.close()
