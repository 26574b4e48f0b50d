"""tests/test_health.py's tests of ``wis.health()``, re-collected against wis2l_core.sync
(see _adapter.py); its other tests are about the asynchronous HealthChecker itself, and
tests/sync/test_runtime.py checks the synchronous report's services."""

from tests.sync._adapter import adapt, recollect

from wis2l_core.sync import Wis2l

recollect(
    globals(),
    "test_health",
    replace={"Wis2l": adapt(Wis2l)},
    only=(
        "test_an_unmigrated_database_is_unhealthy_and_says_to_migrate",
        "test_a_database_behind_the_library_is_unhealthy",
    ),
)
