"""tests/test_cache_store.py, re-collected against wis2l_core.sync (see _adapter.py)."""

from tests.sync._adapter import adapt, recollect

from wis2l_core.sync import BuildCache, Cache, RedisClient

recollect(
    globals(),
    "test_cache_store",
    replace={
        "Cache": adapt(Cache),
        "BuildCache": adapt(BuildCache),
        "RedisClient": adapt(RedisClient),
    },
)
