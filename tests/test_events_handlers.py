"""The seed subscribers on a real NATS (and Redis for the token cache)."""

from __future__ import annotations

import logging
import uuid

import nats
import nats.js.errors
import pytest
from tests.helpers import eventually

from wis2l_core.cache.client import RedisClient
from wis2l_core.cache.tokens import TokenCache
from wis2l_core.config import Settings
from wis2l_core.events import ComponentCreated, EventBus, TokenDeleted, TokensSynced, TokenUpdated
from wis2l_core.events.handlers import register_seed_subscribers
from wis2l_core.models import Language, TokenCategory


async def _consumer_exists(bus: EventBus, name: str) -> bool:
    try:
        await bus.jetstream.consumer_info(bus.settings.stream_name, name)
    except nats.js.errors.NotFoundError:
        return False
    return True


async def test_token_events_invalidate_the_token_cache(
    bus: EventBus, wis2l_settings: Settings
) -> None:
    client = RedisClient(wis2l_settings)
    await client.open()
    try:
        cache = TokenCache(client)
        register_seed_subscribers(bus, cache)
        await bus.start_subscribers()
        p = uuid.uuid4()
        loads: list[int] = []

        async def loader() -> list[int]:
            loads.append(1)
            return [len(loads)]

        assert await cache.get_or_load(p, loader) == [1]
        assert await cache.get_or_load(p, loader) == [1]  # cached
        await bus.publish(
            TokenUpdated(
                project_id=p,
                token_id=uuid.uuid4(),
                name="c",
                category=TokenCategory.COLOR,
                version=2,
            )
        )

        async def reloaded(expected: list[int]) -> bool:
            return bool(await cache.get_or_load(p, loader) == expected)

        await eventually(lambda: reloaded([2]))
        await bus.publish(TokensSynced(project_id=p, count=4, changed=1))
        await eventually(lambda: reloaded([3]))
        await bus.publish(
            TokenDeleted(
                project_id=p, token_id=uuid.uuid4(), name="c", category=TokenCategory.COLOR
            )
        )
        await eventually(lambda: reloaded([4]))
    finally:
        await bus.close(2)
        await client.aclose()


async def test_lifecycle_events_are_logged(bus: EventBus, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wis2l_core.events.handlers")
    register_seed_subscribers(bus)  # no token cache: only the log subscribers
    await bus.start_subscribers()

    async def ready() -> bool:
        return await _consumer_exists(bus, "wis2l-audit-log-component-created")

    await eventually(ready)
    assert not await _consumer_exists(bus, "wis2l-token-cache-token-updated")
    event = ComponentCreated(
        project_id=uuid.uuid4(),
        component_id=uuid.uuid4(),
        name="Hero",
        language=Language.LUA,
        version=1,
    )
    await bus.publish(event)

    async def logged() -> bool:
        return any(
            r.message.startswith("component.created") and str(event.id) in r.message
            for r in caplog.records
        )

    await eventually(logged)
