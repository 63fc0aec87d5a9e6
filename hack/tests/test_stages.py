"""``hack/stages.py``: what ``make`` records, and the summary ``.ci/run`` prints from it."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest
import stages

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="5">
<testcase classname="test_a" name="test_one" time="0.1"/>
<testcase classname="test_a" name="test_two" time="0.1"/>
<testcase classname="test_a" name="test_bad" time="0.1"><failure message="assert 0">...</failure></testcase>
<testcase classname="test_a" name="test_broken" time="0.1"><error message="fixture">...</error></testcase>
<testcase classname="test_a" name="test_away"><skipped type="pytest.skip" message="no cluster">x</skipped></testcase>
</testsuite></testsuites>
"""


@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(stages, "RESULTS", tmp_path / ".ci-results")
    return stages.RESULTS


def timings(results: Path, *lines: str) -> None:
    results.mkdir(exist_ok=True)
    (results / "timings").write_text("".join(f"{line}\n" for line in lines).replace(" ", "\t"))


def test_run_records_the_exit_status(results: Path) -> None:
    assert stages.main(["run", "unit/server", "--", sys.executable, "-c", "raise SystemExit(3)"]) == 3
    assert stages.main(["run", "lint", "--", sys.executable, "-c", "pass"]) == 0
    events = [line.split("\t") for line in (results / "timings").read_text().splitlines()]
    assert [(e[0], e[1], e[3]) for e in events] == [
        ("unit/server", "start", "0"),
        ("unit/server", "end", "3"),
        ("lint", "start", "0"),
        ("lint", "end", "0"),
    ]
    assert [s.result() for s in stages.stages()] == ["failed (3)", "ok"]


def test_start_and_end(results: Path) -> None:
    assert stages.main(["start", "lint"]) == 0
    assert stages.main(["end", "lint"]) == 0
    (lint,) = stages.stages()
    assert lint.ok() and lint.end is not None and lint.end >= lint.start


def test_the_table(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    timings(
        results,
        "lint start 1000 0",
        "lint end 1042 0",
        "unit/server start 1042 0",
        "unit/server end 1162.5 0",
        "unit/bench start 1163 0",
        "unit/bench end 1165 1",
        "e2e/cluster-up start 1170 0",
    )
    assert stages.report(now=1300) == 0
    lines = capsys.readouterr().out.splitlines()
    cells = [[c.strip() for c in line.split("|")] for line in lines if "|" in line]
    assert cells == [
        ["stage", "time", "result", "tests"],
        ["lint", "42.0 s", "ok"],
        ["unit/server", "2 min 00 s", "ok"],
        ["unit/bench", "2.0 s", "failed (1)"],
        ["e2e/cluster-up", "2 min 10 s", "did not finish"],
        ["unit (all 2)", "2 min 02 s", "1 not ok"],
        ["total", "5 min 00 s", "2 not ok"],
    ]
    assert lines[-1] == "tests: 0 passed, 0 failed, 0 skipped"


def test_tests_are_counted_and_a_skip_fails(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    timings(results, "unit/server start 1000 0", "unit/server end 1010 0")
    (results / "unit-server.xml").write_text(JUNIT)
    assert stages.report(now=1010) == 1
    out = capsys.readouterr().out
    assert "| 2 passed, 2 failed, 1 skipped" in out
    assert "SKIPPED, and a skip fails CI: unit-server.xml: test_a::test_away: no cluster" in out
    assert out.splitlines()[-1] == "tests: 2 passed, 2 failed, 1 skipped"


def test_a_stage_run_again_gets_a_row_each(results: Path) -> None:
    timings(results, "lint start 1 0", "lint end 2 1", "lint start 3 0", "lint end 5 0")
    assert [(s.seconds(0), s.result()) for s in stages.stages()] == [(1, "failed (1)"), (2, "ok")]


def test_nothing_recorded(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert stages.report(now=0) == 0
    assert "no stage was recorded" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["run", "lint"], ["start", "lint", "--", "true"], ["report", "--", "x"]])
def test_a_command_only_after_run(argv: list[str], results: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        stages.main(argv)
    assert exc.value.code == 2


def test_slowest_ranks_the_tests_of_every_report(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results.mkdir()
    (results / "unit-server.xml").write_text(JUNIT)
    (results / "e2e-serial.xml").write_text(JUNIT.replace('name="test_one" time="0.1"', 'name="test_one" time="75.5"'))
    assert stages.slowest(2) == [
        (75.5, "e2e-serial", "test_a::test_one"),
        (0.1, "e2e-serial", "test_a::test_two"),
    ]
    assert stages.main(["slowest", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split() == ["1", "min", "16", "s", "e2e-serial", "test_a::test_one"]


def test_wait_blocks_while_another_lanes_stage_runs(results: Path) -> None:
    """`make test`'s kind lane loads the images once the e2e lane built them (``wait e2e/images``)."""
    assert stages.main(["wait", "e2e/images"]) == 0  # never started (a lane run alone): no wait
    stages.record("e2e/images", "start")
    threading.Timer(0.5, stages.record, ("e2e/images", "end")).start()
    started = time.monotonic()
    assert stages.main(["wait", "e2e/images"]) == 0
    assert time.monotonic() - started >= 0.5
    stages.record("e2e/images", "start")
    assert stages.wait("e2e/images", timeout=0.2) == 1  # still running at the deadline
