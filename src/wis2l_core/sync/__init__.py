"""The synchronous API: ``wis2l_core.sync.Wis2l(settings)``, for scripts and synchronous apps.

::

    from wis2l_core import Settings
    from wis2l_core.sync import Wis2l

    with Wis2l(Settings.from_env()) as wis:
        user = wis.users.create(email="ada@example.com", name="Ada", subject="nocturna|42")

The repositories and caches are generated from the asynchronous ones by
``tools/async_to_sync.py`` (never edited by hand); see docs/guides/sync.md.
"""

from wis2l_core.sync._pool import Database
from wis2l_core.sync._redis import RedisClient
from wis2l_core.sync._runtime import SyncBus, Wis2l
from wis2l_core.sync.cache.builds import BuildCache
from wis2l_core.sync.cache.ratelimit import RateLimiter
from wis2l_core.sync.cache.sessions import SessionStore
from wis2l_core.sync.cache.store import Cache
from wis2l_core.sync.db.repositories import Repositories, Transaction

__all__ = [
    "BuildCache",
    "Cache",
    "Database",
    "RateLimiter",
    "RedisClient",
    "Repositories",
    "SessionStore",
    "SyncBus",
    "Transaction",
    "Wis2l",
]
