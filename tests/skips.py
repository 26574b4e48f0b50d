"""The skips CI expects, and the hooks that fail any other (``--only-expected-skips``).

tests/conftest.py installs the hooks; .ci/run passes the option to both of its test runs.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Generator

import pytest

EXPECTED_SKIPS: dict[str, str] = {
    # Debian 12's PgBouncer is 1.18, so this runs in CI today; from 1.21 on, prepared
    # statements work in transaction mode and the control has nothing to show.
    "tests/test_pgbouncer.py::test_prepared_statements_break_transaction_mode": (
        "PgBouncer >= 1.21"
    ),
}
"""The only skips CI accepts (``--only-expected-skips``, which .ci/run passes): node id
(an fnmatch pattern) -> a phrase the skip's reason must contain. Any other skip fails,
naming the test and its reason: a package of ``[dev]`` that is missing, a server CI did
not start or a tool it did not install must not pass as a skip."""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--only-expected-skips",
        action="store_true",
        help="fail any skip not listed in tests/skips.py EXPECTED_SKIPS (CI passes it)",
    )


def _unexpected_skip(
    config: pytest.Config, nodeid: str, report: pytest.TestReport | pytest.CollectReport
) -> str | None:
    """Why a skip report must fail instead (``None``: it may stand)."""
    if not (report.skipped and config.getoption("only_expected_skips")):
        return None
    if hasattr(report, "wasxfail"):
        return None
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    for pattern, phrase in EXPECTED_SKIPS.items():
        if fnmatch.fnmatchcase(nodeid, pattern) and phrase in reason:
            return None
    return (
        f"unexpected skip of {nodeid}: {reason}\n"
        "CI accepts only the skips listed in tests/skips.py EXPECTED_SKIPS"
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    message = _unexpected_skip(item.config, item.nodeid, report)
    if message is not None:
        report.outcome = "failed"
        report.longrepr = message
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    message = _unexpected_skip(collector.config, collector.nodeid, report)
    if message is not None:
        report.outcome = "failed"
        report.longrepr = message
    return report
