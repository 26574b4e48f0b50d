"""tests/test_raw_sql.py, re-collected against wis2l_core.sync (see _adapter.py)."""

from tests.sync._adapter import recollect

from wis2l_core.sync import Transaction

recollect(globals(), "test_raw_sql", replace={"Transaction": Transaction})
