"""tests/test_projects.py, re-collected against wis2l_core.sync (see _adapter.py)."""

from tests.sync._adapter import recollect

recollect(globals(), "test_projects")
