"""The suite's fixtures come from wis2l_core.testing (the pytest11 plugin apps use too)."""

import os
import secrets
import signal
from collections.abc import AsyncIterator, Iterator
from uuid import uuid4

import psycopg
import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from psycopg import sql
from tests.skips import (  # noqa: F401 - hooks: --only-expected-skips
    pytest_addoption,
    pytest_make_collect_report,
    pytest_runtest_makereport,
)

from wis2l_core import Settings
from wis2l_core.cache import RedisClient
from wis2l_core.events import EventBus
from wis2l_core.testing.plugin import drop_stream
from wis2l_core.testing.servers import Servers, with_database

hypothesis_settings.register_profile(
    "default",
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
hypothesis_settings.register_profile(
    "ci", parent=hypothesis_settings.get_profile("default"), max_examples=60
)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# A shell starts a background job (`pytest ... &`, nohup) with SIGINT ignored, and an
# ignored signal is inherited across exec: the tests that stop `wis2l dev` or an example
# with SIGINT (Ctrl-C) would then wait for a child that ignores it. Give the suite, and so
# every child it starts, the SIGINT a terminal gives.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def settings(wis2l_servers: Servers) -> Settings:
    """Settings on the session's Redis with a namespace of the test's own."""
    return Settings(redis_url=wis2l_servers.redis_url, namespace=f"t{uuid4().hex[:12]}")


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[RedisClient]:
    """An open RedisClient; the test's keys are deleted afterwards."""
    client = RedisClient(settings)
    await client.open()
    yield client
    async for key in client.redis.scan_iter(match=f"{settings.namespace}:*", count=500):
        await client.redis.delete(key)
    await client.aclose()


@pytest.fixture
async def bus(wis2l_settings: Settings) -> AsyncIterator[EventBus]:
    """An open EventBus on the test's own stream (ready: NATS answered); the stream is
    deleted afterwards."""
    bus = EventBus(wis2l_settings)
    await bus.open(require=True)
    assert bus.ready
    yield bus
    await bus.close(2)
    await drop_stream(wis2l_settings)


@pytest.fixture
def empty_database_url(wis2l_servers: Servers) -> Iterator[str]:
    """A brand-new database with no tables at all (never migrated); dropped afterwards."""
    name = f"wis2l_empty_{secrets.token_hex(5)}"
    admin = with_database(wis2l_servers.database_url, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield with_database(wis2l_servers.database_url, name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
