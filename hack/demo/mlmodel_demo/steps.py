"""``make demo``'s steps, one after the other: each prints one progress line and logs to ``.demo/<step>.log``;
a failed step prints the end of its log."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from mlmodel_demo.report import Progress, failure_report

REPO = Path(__file__).resolve().parents[3]
WORKDIR = REPO / ".demo"
T0_ENV = "MLMODEL_DEMO_T0"  # the time.monotonic() when `make demo` started, handed over to demo_cluster.py


class StepFailed(Exception):
    """A step could not be done; the message says what, its log says why."""


@dataclass
class Step:
    """The step in progress: its log, a note for its progress line and lines to print after it."""

    log: TextIO
    note: str = ""
    output: list[str] = field(default_factory=list)


@dataclass
class Steps:
    """Runs steps one after the other, each with a progress line and a log in ``workdir``."""

    workdir: Path = WORKDIR
    progress: Progress = field(default_factory=lambda: Progress(float(os.environ.get(T0_ENV, time.monotonic()))))
    log: TextIO | None = None  # the log of the step in progress

    @contextlib.contextmanager
    def step(self, name: str, title: str) -> Iterator[Step]:
        """Run the block as step ``name``; on failure print which step failed and its log's tail, and exit 1."""
        self.workdir.mkdir(exist_ok=True)
        path = self.workdir / f"{name}.log"
        started = time.monotonic()
        print(self.progress.begin(title, started), end="", flush=True)
        with path.open("w") as log:
            self.log, current = log, Step(log)
            try:
                yield current
            except (StepFailed, AssertionError) as err:  # a command that failed (mlmodel_testing's run) says it all
                log.write(f"\n{err}\n")
                failed = True
            except Exception:  # noqa: BLE001 - whatever a step raises, it is reported as that step's failure
                log.write(f"\n{traceback.format_exc()}")
                failed = True
            else:
                failed = False
            finally:
                self.log = None
        if not failed:
            print(self.progress.end(started, time.monotonic(), current.note), *current.output, sep="\n", flush=True)
            return
        print(self.progress.failed(started, time.monotonic()), flush=True)
        shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
        print(failure_report(name, str(shown), path.read_text()), file=sys.stderr)
        raise SystemExit(1)

    @contextlib.contextmanager
    def command(self, name: str, title: str, argv: Sequence[str], timeout: float = 3600) -> Iterator[Step]:
        """A command as a step, its output in the step's log; the block runs after it, within the step."""
        with self.step(name, title) as step:
            step.log.write(f"$ {' '.join(argv)}\n")
            step.log.flush()
            code = subprocess.run(argv, cwd=REPO, stdout=step.log, stderr=subprocess.STDOUT, timeout=timeout).returncode
            if code != 0:
                raise StepFailed(f"{' '.join(argv)} exited with {code}")
            yield step

    def run(self, name: str, title: str, argv: Sequence[str], timeout: float = 3600) -> None:
        """A command as a step, its output in the step's log."""
        with self.command(name, title, argv, timeout):
            pass


def make(target: str) -> list[str]:
    return ["make", "--no-print-directory", target]
