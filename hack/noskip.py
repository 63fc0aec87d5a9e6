"""pytest plugin: a skipped test, or an expected failure, is a failure here, with its reason.

``make`` loads it into every test run (``-p noskip``, with ``hack/`` on ``PYTHONPATH``): the
suites need no optional dependency and no cluster they cannot have, so a test that does not run
is a bug to see, never a pass. A skipped module (``pytest.skip(allow_module_level=True)``,
``importorskip``) becomes a collection error the same way.
"""

from __future__ import annotations

from collections.abc import Generator

import pytest

WHY = "(hack/noskip.py: a test that does not run fails)"


def _what(report: pytest.TestReport | pytest.CollectReport) -> str:
    """What pytest would have reported: the skip or the xfail, with its reason."""
    xfail = getattr(report, "wasxfail", None)
    if xfail is not None:
        return f"xfailed: {xfail}" if xfail else "xfailed"
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return f"skipped: {reason.removeprefix('Skipped: ')}"


def _fail(report: pytest.TestReport | pytest.CollectReport) -> None:
    report.longrepr = f"{_what(report)} {WHY}"
    report.outcome = "failed"
    if hasattr(report, "wasxfail"):
        del report.wasxfail  # else the terminal and JUnit reports still call it an xfail


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.skipped:
        _fail(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport | None, pytest.CollectReport | None]:
    report = yield
    if report is not None and report.skipped:
        _fail(report)
    return report
