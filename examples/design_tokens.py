"""SLATE: sync a design-token set, read it through the cache, watch it invalidated.

``wis.tokens.sync`` upserts a token set in one transaction (one ``TokensSynced`` event);
``wis.token_cache.get_or_load`` serves the set from Redis, calling the loader only on a
miss; a changed token (``wis.tokens.upsert``) records ``TokenUpdated``, and the runtime's
own subscriber (registered by ``Wis2l``) invalidates the project's cached set when the
event arrives, so the next read loads the fresh values.

Run it with no set-up at all (an embedded stack is started), or set DATABASE_URL /
REDIS_URL / NATS_URL to use your servers::

    python examples/design_tokens.py
"""

from __future__ import annotations

import asyncio
import time
from uuid import UUID

from _common import runtime

from wis2l_core import DesignToken, Engine, TokenCategory, Wis2l

TOKENS = [
    {"name": "color.primary", "category": "color", "group": "palette", "value": "#ff6b35"},
    {"name": "color.background", "category": "color", "group": "palette", "value": "#1a1a2e"},
    {"name": "spacing.unit", "category": "spacing", "value": {"px": 8}},
    {"name": "font.body", "category": "typography", "value": {"family": "Inter", "size": 14}},
]


async def invalidations(wis: Wis2l, project_id: UUID) -> int:
    """How many times the project's cached tokens were invalidated.

    The cache keeps a generation counter per project (``<ns>:tokens:{<id>}:gen``, beside
    the value's key), bumped by every invalidation; reading it shows when the subscriber
    has run.
    """
    raw = await wis.redis.redis.get(f"{wis.token_cache.key(project_id)}:gen")
    return int(raw or 0)


async def wait_for_invalidation(wis: Wis2l, project_id: UUID, count: int) -> float:
    """Wait until the project's cache was invalidated ``count`` times; return the seconds."""
    started = time.perf_counter()
    while await invalidations(wis, project_id) < count:
        if time.perf_counter() - started > 15:
            raise TimeoutError("the TokenUpdated subscriber did not invalidate the cache")
        await asyncio.sleep(0.02)
    return time.perf_counter() - started


async def main() -> None:
    async with runtime() as wis:
        stamp = int(time.time() * 1000)
        user = await wis.users.create(
            email=f"slate-{stamp}@example.com", name="Sol", subject=f"nocturna|sol-{stamp}"
        )
        project = await wis.projects.create(
            owner_id=user.id, name="Dusk Drifter", slug=f"dusk-drifter-{stamp}", engine="godot"
        )
        assert project.engine == Engine.GODOT

        synced = await wis.tokens.sync(project.id, TOKENS)
        print(f"synced     {len(synced)} tokens (one TokensSynced event)")
        # TokensSynced invalidates the (still empty) cache too: let it land before reading.
        await wait_for_invalidation(wis, project.id, 1)

        loads = 0

        async def load() -> list[DesignToken]:
            nonlocal loads
            loads += 1
            return list((await wis.tokens.find_all(project.id, limit=1000)).items)

        def show(label: str, tokens: list[DesignToken]) -> None:
            primary = next(t for t in tokens if t.name == "color.primary")
            print(
                f"{label:<10} {len(tokens)} tokens, color.primary={primary.value} "
                f"v{primary.version} (loader calls: {loads})"
            )

        tokens = await wis.token_cache.get_or_load(project.id, load, type=list[DesignToken])
        show("read 1", tokens)  # a miss: loaded from PostgreSQL, stored in Redis
        tokens = await wis.token_cache.get_or_load(project.id, load, type=list[DesignToken])
        show("read 2", tokens)  # a hit: from Redis, the loader is not called

        changed = await wis.tokens.upsert(
            project_id=project.id,
            name="color.primary",
            category=TokenCategory.COLOR,
            group="palette",
            value="#00c2a8",
        )
        print(f"updated    {changed.name} -> {changed.value} v{changed.version} (TokenUpdated)")
        seconds = await wait_for_invalidation(wis, project.id, 2)
        print(f"invalidated by the TokenUpdated subscriber after {seconds * 1000:.0f} ms")

        tokens = await wis.token_cache.get_or_load(project.id, load, type=list[DesignToken])
        show("read 3", tokens)  # a miss again: the fresh values
        tokens = await wis.token_cache.get_or_load(project.id, load, type=list[DesignToken])
        show("read 4", tokens)  # and cached again

        by_category = await wis.tokens.find_by_category(project.id, TokenCategory.COLOR)
        print(f"colors     {', '.join(f'{t.name}={t.value}' for t in by_category)}")


if __name__ == "__main__":
    asyncio.run(main())
