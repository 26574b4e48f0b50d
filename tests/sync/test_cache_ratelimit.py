"""tests/test_cache_ratelimit.py, re-collected against wis2l_core.sync (see _adapter.py)."""

from tests.sync._adapter import adapt, recollect

from wis2l_core.sync import RateLimiter, RedisClient

recollect(
    globals(),
    "test_cache_ratelimit",
    replace={"RateLimiter": adapt(RateLimiter), "RedisClient": adapt(RedisClient)},
)
