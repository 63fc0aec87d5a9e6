#!/usr/bin/env python3
"""The stages of ``make test``, timed, for the summary that ``.ci/run`` prints at its end.

    python3 hack/stages.py run STAGE -- CMD...   # run CMD as STAGE: its start, end and exit status
    python3 hack/stages.py start STAGE           # the same around several recipe lines (``make lint``)
    python3 hack/stages.py end STAGE
    python3 hack/stages.py report                # the table, and the tests of the JUnit reports;
                                                 # exit 1 if one of them has a skipped test
    python3 hack/stages.py slowest N             # the N slowest tests of every JUnit report (``make test``)

Everything goes to ``.ci-results/`` (``.ci/run`` empties it first): ``timings``, one line per
event, and each test stage's JUnit report ``<stage>.xml`` (``/`` as ``-``), which ``make`` asks
pytest for. A stage named ``GROUP/PART`` also counts towards GROUP's subtotal.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / ".ci-results"
HEADER = ("stage", "time", "result", "tests")


def record(stage: str, event: str, rc: int = 0) -> None:
    """Append ``stage event time rc`` to the timings file."""
    RESULTS.mkdir(exist_ok=True)
    with (RESULTS / "timings").open("a") as f:
        f.write(f"{stage}\t{event}\t{time.time():.3f}\t{rc}\n")


def run(stage: str, cmd: list[str]) -> int:
    """Run ``cmd`` as ``stage``; its exit status is recorded and returned."""
    record(stage, "start")
    rc = 1  # unless the command finishes: it was interrupted, or could not start
    try:
        rc = subprocess.call(cmd)
    finally:
        record(stage, "end", rc)
    return rc


def wait(stage: str, timeout: float = 1800) -> int:
    """Block while ``stage`` runs in another lane (started, not ended), at most ``timeout`` seconds: 0 once it is
    not running, 1 if it still was."""
    deadline = time.monotonic() + timeout
    while any(s.name == stage and s.end is None for s in stages()):
        if time.monotonic() > deadline:
            return 1
        time.sleep(1)
    return 0


@dataclass
class Counts:
    """Tests of JUnit reports: passed, failed (errors included), and the skipped ones."""

    passed: int = 0
    failed: int = 0
    skipped: list[str] = field(default_factory=list)

    def add(self, other: Counts) -> None:
        self.passed += other.passed
        self.failed += other.failed
        self.skipped += other.skipped

    def line(self) -> str:
        return f"{self.passed} passed, {self.failed} failed, {len(self.skipped)} skipped"


@dataclass
class Stage:
    name: str
    start: float
    end: float | None = None
    rc: int = 0
    tests: Counts | None = None

    def seconds(self, now: float) -> float:
        return (now if self.end is None else self.end) - self.start

    def ok(self) -> bool:
        return self.end is not None and self.rc == 0

    def result(self) -> str:
        return "did not finish" if self.end is None else f"failed ({self.rc})" if self.rc else "ok"


def junit_counts(path: Path) -> Counts:
    """The tests of one pytest JUnit report."""
    counts = Counts()
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome = next((child for child in case if child.tag in ("failure", "error", "skipped")), None)
        if outcome is None:
            counts.passed += 1
        elif outcome.tag == "skipped":
            test = f"{case.get('classname')}::{case.get('name')}"
            counts.skipped.append(f"{path.name}: {test}: {outcome.get('message', '')}")
        else:
            counts.failed += 1
    return counts


def stages() -> list[Stage]:
    """The recorded stages in the order they started; an end closes its stage's latest start."""
    found: list[Stage] = []
    timings = RESULTS / "timings"
    for line in timings.read_text().splitlines() if timings.exists() else []:
        name, event, at, rc = line.split("\t")
        if event == "start":
            found.append(Stage(name, float(at)))
            continue
        stage = next((s for s in reversed(found) if s.name == name and s.end is None), None)
        if stage is not None:
            stage.end, stage.rc = float(at), int(rc)
    for stage in found:
        junit = RESULTS / f"{stage.name.replace('/', '-')}.xml"
        if junit.exists():
            stage.tests = junit_counts(junit)
    return found


def duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{seconds:.1f} s" if seconds < 60 else f"{minutes} min {rest:02d} s"


def row(name: str, members: list[Stage], seconds: float) -> tuple[str, str, str, str]:
    """One line of the table, for one stage or several."""
    if len(members) == 1:
        result = members[0].result()
    else:
        bad = sum(not s.ok() for s in members)
        result = f"{bad} not ok" if bad else "ok"
    counted = [s.tests for s in members if s.tests]
    tests = Counts()
    for c in counted:
        tests.add(c)
    return name, duration(seconds), result, tests.line() if counted else ""


def report(now: float) -> int:
    """Print the table, the skipped tests and the tests' closing line; 1 if a test was skipped."""
    found = stages()
    if not found:
        print(f"no stage was recorded in {RESULTS / 'timings'}")
        return 0
    rows = [HEADER, *(row(s.name, [s], s.seconds(now)) for s in found)]
    groups: dict[str, list[Stage]] = {}
    for s in found:
        if "/" in s.name:
            groups.setdefault(s.name.split("/")[0], []).append(s)
    for group, members in groups.items():
        if len(members) > 1:
            rows.append(row(f"{group} (all {len(members)})", members, sum(s.seconds(now) for s in members)))
    last = max(now if s.end is None else s.end for s in found)
    rows.append(row("total", found, last - found[0].start))
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip(" |") for r in rows]
    print("\n".join([lines[0], "-" * max(map(len, lines)), *lines[1:]]))
    total = Counts()
    for s in found:
        if s.tests:
            total.add(s.tests)
    for test in total.skipped:
        print(f"SKIPPED, and a skip fails CI: {test}")
    print(f"tests: {total.line()}")
    return 1 if total.skipped else 0


def slowest(n: int) -> list[tuple[float, str, str]]:
    """The ``n`` slowest tests of the JUnit reports: seconds, report (the stage), test."""
    found = [
        (float(case.get("time") or 0), path.stem, f"{case.get('classname')}::{case.get('name')}")
        for path in sorted(RESULTS.glob("*.xml"))
        for case in ET.parse(path).getroot().iter("testcase")
    ]
    return sorted(found, key=lambda t: -t[0])[:n]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("run", "start", "end", "wait"):
        sub.add_parser(command).add_argument("stage")
    sub.add_parser("report")
    sub.add_parser("slowest").add_argument("n", type=int)
    argv = sys.argv[1:] if argv is None else argv
    ours, cmd = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    args = parser.parse_args(ours)
    if (args.command == "run") != bool(cmd):
        parser.error("a command follows `--` after `run STAGE`, and only there")
    if args.command == "run":
        return run(args.stage, cmd)
    if args.command == "wait":
        return wait(args.stage)
    if args.command == "report":
        return report(time.time())
    if args.command == "slowest":
        print(f"the {args.n} slowest tests (setup and teardown included):")
        for seconds, stage, test in slowest(args.n):
            print(f"{duration(seconds):>12}  {stage:<14} {test}")
        return 0
    record(args.stage, args.command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
