"""``hack/noskip.py``: every way a test can fail to run is a failure that says why."""

from __future__ import annotations

import noskip
import pytest

TESTS = """
import pytest

def test_runs():
    pass

@pytest.mark.skip(reason="marked away")
def test_marked():
    pass

@pytest.mark.skipif(True, reason="a condition")
def test_condition():
    pass

def test_inside():
    pytest.skip("decided inside")

@pytest.fixture
def refuses():
    pytest.skip("a fixture refused")

def test_fixture(refuses):
    pass

@pytest.mark.xfail(reason="a known bug")
def test_expected_failure():
    assert False
"""


def test_each_skip_and_xfail_fails_with_its_reason(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mixed=TESTS)
    result = pytester.runpytest("-rA", plugins=[noskip])
    # A skip decided before the call (a mark, a fixture) fails at setup: pytest counts it as an error.
    result.assert_outcomes(passed=1, failed=2, errors=3)
    for line in (
        "ERROR test_mixed.py::test_marked - skipped: marked away *",
        "ERROR test_mixed.py::test_condition - skipped: a condition *",
        "FAILED test_mixed.py::test_inside - skipped: decided inside *",
        "ERROR test_mixed.py::test_fixture - skipped: a fixture refused *",
        "FAILED test_mixed.py::test_expected_failure - xfailed: a known bug *",
    ):
        result.stdout.fnmatch_lines([line])
    result.stdout.fnmatch_lines([f"skipped: marked away {noskip.WHY}"])


def test_a_skipped_module_is_a_collection_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_gone='import pytest\npytest.importorskip("no_such_module_here")\n')
    result = pytester.runpytest(plugins=[noskip])
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["ERROR test_gone.py - skipped: could not import 'no_such_module_here'*"])
    assert result.ret == pytest.ExitCode.INTERRUPTED


def test_junit_reports_no_skip(pytester: pytest.Pytester) -> None:
    """JUnit (what ``.ci/run`` reads) shows the failures, not skips or xfails."""
    pytester.makepyfile(test_mixed=TESTS)
    pytester.runpytest("--junitxml=report.xml", plugins=[noskip])
    junit = (pytester.path / "report.xml").read_text()
    assert 'skipped="0"' in junit and "<skipped" not in junit
    assert 'failures="2"' in junit and 'errors="3"' in junit


def test_without_the_plugin_they_skip(pytester: pytest.Pytester) -> None:
    """The baseline the plugin changes."""
    pytester.makepyfile(test_mixed=TESTS)
    pytester.runpytest().assert_outcomes(passed=1, skipped=4, xfailed=1)
