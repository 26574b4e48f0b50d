"""What every example shares: a runtime on your servers, or on an embedded stack.

``DATABASE_URL`` set: :class:`~wis2l_core.Settings` come from the environment
(``REDIS_URL``, ``NATS_URL``, ``WIS2L_NAMESPACE`` ...) and pending migrations are applied.
Not set: an embedded PostgreSQL, Valkey and NATS are started (and stopped at the end).
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs

from wis2l_core import Settings, Wis2l


def server_env(settings: Settings) -> dict[str, str]:
    """The environment that points another process at the same servers and stream."""
    return {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "NATS_URL": ",".join(settings.nats_urls),
        "WIS2L_NAMESPACE": settings.namespace,
        "WIS2L_STREAM": settings.stream_name,
    }


@asynccontextmanager
async def runtime(*, quiet: bool = False, **overrides: Any) -> AsyncIterator[Wis2l]:
    """A started :class:`~wis2l_core.Wis2l`: your servers when DATABASE_URL is set, else embedded.

    Args:
        quiet: do not print how long the embedded stack took to start.
        overrides: :class:`~wis2l_core.Settings` fields to change, e.g. ``migrations=``.
    """
    if os.environ.get("DATABASE_URL"):
        wis = Wis2l(attrs.evolve(Settings.from_env(), **overrides))
        await wis.migrate()
        async with wis:
            yield wis
    else:
        started = time.perf_counter()
        async with Wis2l.embedded(**overrides) as wis:
            if not quiet:
                print(f"embedded stack up and migrated in {time.perf_counter() - started:.1f} s")
            yield wis
