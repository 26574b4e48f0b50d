"""The servers and a fresh database for one benchmark run.

The servers named by ``WIS2L_TEST_DATABASE_URL``, ``WIS2L_TEST_REDIS_URL`` and
``WIS2L_TEST_NATS_URL`` are used when all three are set, else an embedded stack is
started (the same rule as the test suite). The run gets its own migrated database (cloned
from a template), Redis namespace and JetStream stream, all removed at the end.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from uuid import UUID

import attrs

from wis2l_core import Settings, Wis2l
from wis2l_core.testing.plugin import drop_stream
from wis2l_core.testing.servers import Servers, TemplateDatabase, find_servers

__all__ = ["Env", "run_env", "servers_and_database"]


@attrs.define
class Env:
    """A started runtime on the run's database, and what the cases share.

    Attributes:
        servers: where the servers are.
        settings: the runtime's settings (own database, namespace and stream).
        wis: the started runtime.
        user_id: a user made for the run.
        project_id: a project of that user.
    """

    servers: Servers
    settings: Settings
    wis: Wis2l
    user_id: UUID
    project_id: UUID

    async def new_project(self) -> UUID:
        """Another project of the run's user (cases that must not share rows use one)."""
        tag = secrets.token_hex(4)
        project = await self.wis.projects.create(
            owner_id=self.user_id, name=f"bench {tag}", slug=f"bench-{tag}", engine="web"
        )
        return project.id


@contextmanager
def servers_and_database(servers: Servers | None = None) -> Iterator[tuple[Servers, str]]:
    """The servers (``servers``, else found) and a fresh migrated database (dropped after)."""
    with contextlib.ExitStack() as stack:
        if servers is None:
            servers = stack.enter_context(find_servers())
        template = TemplateDatabase(servers.database_url)
        template.create()
        try:
            url = template.clone()
            try:
                yield servers, url
            finally:
                template.drop(url)
        finally:
            template.drop()


def settings_for(servers: Servers, database_url: str, **overrides: object) -> Settings:
    """Settings on the run's database with a namespace and stream of their own."""
    tag = secrets.token_hex(4)
    fields: dict[str, object] = {
        "database_url": database_url,
        "redis_url": servers.redis_url,
        "nats_urls": (servers.nats_url,),
        "namespace": f"bench{tag}",
        "stream_name": f"BENCH{tag.upper()}",
        "db_pool_min_size": 2,
        "db_pool_max_size": 10,
    }
    fields.update(overrides)
    return Settings(**fields)  # type: ignore[arg-type]


@asynccontextmanager
async def run_env(servers: Servers, database_url: str) -> AsyncIterator[Env]:
    """A started :class:`Wis2l` (no seed subscribers) with a user and a project."""
    settings = settings_for(servers, database_url)
    wis = Wis2l(settings, seed_subscribers=False)
    await wis.start()
    try:
        tag = secrets.token_hex(4)
        user = await wis.users.create(email=f"{tag}@bench.io", name="Bench", subject=tag)
        project = await wis.projects.create(
            owner_id=user.id, name="Bench", slug=f"bench-{tag}", engine="web"
        )
        yield Env(servers, settings, wis, user.id, project.id)
    finally:
        await wis.stop()
        with contextlib.suppress(Exception):
            await drop_stream(settings)
