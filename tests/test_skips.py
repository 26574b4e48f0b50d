"""--only-expected-skips: a skip CI does not expect fails and names itself; a listed one
(and an xfail) stands; without the option every skip stands."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

MODULE = """
import pytest

def test_unexpected():
    pytest.skip("a package is missing")

@pytest.mark.skipif(True, reason="PgBouncer >= 1.21 keeps prepared statements")
def test_prepared_statements_break_transaction_mode():
    pass

@pytest.mark.xfail(reason="known")
def test_known():
    assert False
"""


# The throwaway suite's tests/test_pgbouncer.py must not meet the real one, which the
# session running this file may have imported already under the same module name.
ISOLATED = ("-p", "no:cacheprovider", "--import-mode=importlib")


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makeconftest("from tests.skips import *  # noqa: F403")
    pytester.mkdir("tests")
    pytester.makepyfile(**{"tests/test_pgbouncer": MODULE})
    pytester.makepyfile(**{"tests/test_missing": "import pytest\npytest.importorskip('nope_zz')"})
    return pytester


def test_an_unexpected_skip_fails_naming_the_test(suite: pytest.Pytester) -> None:
    result = suite.runpytest_inprocess(
        *ISOLATED, "--only-expected-skips", "--continue-on-collection-errors"
    )
    result.assert_outcomes(failed=1, skipped=1, xfailed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*unexpected skip of tests/test_missing.py: *nope_zz*",
            "*unexpected skip of tests/test_pgbouncer.py::test_unexpected: *a package is missing*",
        ],
    )


def test_without_the_option_skips_stand(suite: pytest.Pytester) -> None:
    result = suite.runpytest_inprocess(*ISOLATED)
    result.assert_outcomes(skipped=3, xfailed=1)
