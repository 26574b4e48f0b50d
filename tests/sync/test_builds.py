"""tests/test_builds.py, re-collected against wis2l_core.sync (see _adapter.py)."""

from tests.sync._adapter import recollect

recollect(globals(), "test_builds")
