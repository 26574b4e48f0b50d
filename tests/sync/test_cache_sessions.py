"""tests/test_cache_sessions.py, re-collected against wis2l_core.sync (see _adapter.py)."""

from tests.sync._adapter import adapt, recollect

from wis2l_core.sync import RedisClient, SessionStore

recollect(
    globals(),
    "test_cache_sessions",
    replace={"SessionStore": adapt(SessionStore), "RedisClient": adapt(RedisClient)},
)
