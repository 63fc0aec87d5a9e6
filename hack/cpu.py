#!/usr/bin/env python3
"""Where a command's CPU goes, by program: the kernel's process accounting over its whole run.

    sudo python3 hack/cpu.py [--top N] -- CMD...    # e.g. -- bash .ci/run (in a fresh clone)

Every process that ends while CMD runs is counted, whoever started it (so the clusters' daemons, their
pods and the containers too, once they have ended): user and system CPU seconds summed by program name
(``comm``: a process forked and not exec'd keeps its parent's name). A daemon that outlives CMD (Docker's,
if it was running before) is not counted. Needs root and the ``acct`` package (``accton``,
``dump-acct``); prints the wall time, the CPU seconds counted, and the top N programs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path


def by_program(dump: Iterable[str]) -> tuple[dict[str, float], Counter[str]]:
    """CPU seconds and process counts by program, from ``dump-acct``'s lines (``comm|v3|user|sys|...``, ticks
    of 1/100 s)."""
    seconds: dict[str, float] = {}
    count: Counter[str] = Counter()
    for line in dump:
        fields = [f.strip() for f in line.split("|")]
        if len(fields) < 4 or fields[1] != "v3":
            continue
        seconds[fields[0]] = seconds.get(fields[0], 0.0) + (float(fields[2]) + float(fields[3])) / 100
        count[fields[0]] += 1
    return seconds, count


def table(seconds: dict[str, float], count: Counter[str], wall: float, top: int) -> str:
    total = sum(seconds.values())
    lines = [f"wall {wall / 60:.1f} min; CPU counted {total / 60:.1f} min ({total / wall:.2f} cores on average)"]
    lines.append(f"{'program':<18} {'CPU min':>8} {'share':>6} {'processes':>9}")
    for name, cpu in sorted(seconds.items(), key=lambda item: -item[1])[:top]:
        lines.append(f"{name:<18} {cpu / 60:8.2f} {cpu / total:6.1%} {count[name]:9d}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("cmd", nargs="+", help="the command (after --)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "pacct"
        log.touch()
        subprocess.run(["accton", str(log)], check=True)
        start = time.monotonic()
        try:
            rc = subprocess.run(args.cmd, check=False).returncode
        finally:
            wall = time.monotonic() - start
            subprocess.run(["accton", "off"], check=True)
        dump = subprocess.run(["dump-acct", str(log)], capture_output=True, text=True, check=True).stdout
    print(table(*by_program(dump.splitlines()), wall, args.top))
    return rc


if __name__ == "__main__":
    sys.exit(main())
