"""tests/test_builds.py, re-collected against wis2l_core.sync (see _adapter.py)."""

from tests.sync._adapter import recollect

recollect(
    globals(),
    "test_builds",
    skip={
        "test_logs_keep_their_last_lines": "it patches wis2l_core.db.builds.MAX_LOGS; the"
        " generated module has its own copy of the constant",
    },
)
