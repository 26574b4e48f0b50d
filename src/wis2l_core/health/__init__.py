"""Health checks: run every check at once, each bounded by its own timeout, and classify.

:class:`HealthChecker` (in ``_checker``) runs named checks (``_checks``: the database,
Redis, NATS and outbox checks and the protocols they take) concurrently and folds them into
a :class:`HealthReport` (``_report``):

- ``ok``: every check passed;
- ``degraded``: every critical check passed, an optional one failed (HTTP 200);
- ``unhealthy``: a critical check failed (HTTP 503).

Error messages in a report are short and scrubbed of passwords and tokens
(:func:`describe_error`, :func:`secrets_of`), so a report can be served as is.
"""

from wis2l_core._secrets import secrets_of
from wis2l_core._version import package_version
from wis2l_core.health._checker import HealthChecker
from wis2l_core.health._checks import (
    MAX_ERROR_LENGTH,
    Backlog,
    Check,
    CheckFailed,
    HasBacklog,
    Pingable,
    database_check,
    describe_error,
    outbox_check,
    ping_check,
    stream_check,
)
from wis2l_core.health._report import CheckResult, HealthReport, HealthStatus

__all__ = [
    "MAX_ERROR_LENGTH",
    "Backlog",
    "Check",
    "CheckFailed",
    "CheckResult",
    "HasBacklog",
    "HealthChecker",
    "HealthReport",
    "HealthStatus",
    "Pingable",
    "database_check",
    "describe_error",
    "outbox_check",
    "package_version",
    "ping_check",
    "secrets_of",
    "stream_check",
]
