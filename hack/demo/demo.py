#!/usr/bin/env python3
"""``make demo``, its first half: the virtualenv and helm, the cluster and the images, with any python3.

Then it hands over to ``demo_cluster.py`` in the virtualenv it made, which installs the chart, serves the
example models, applies the canary and shows it live. Each step prints one progress line and logs to
``.demo/<step>.log``; a failed step prints the end of its log. Everything it runs is idempotent, so running
it again reuses what is up.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from mlmodel_demo.report import Progress
from mlmodel_demo.steps import REPO, T0_ENV, Steps, make

VENV_PYTHON = REPO / ".venv" / "bin" / "python"
STATE = Path(os.environ.get("MLMODEL_CLUSTER_DIR", str(REPO / ".cluster")))  # as the harness picks it


def main() -> None:
    """Steps 1-3, then the rest in the virtualenv."""
    t0 = time.monotonic()
    steps = Steps(progress=Progress(t0))
    steps.run("install", "virtualenv and helm (make install)", make("install"))
    with steps.command("cluster", "cluster (make cluster-up)", make("cluster-up")) as step:
        provider = STATE / "provider"
        step.note = provider.read_text().strip() if provider.exists() else "existing"
    steps.run("images", "images (make images)", make("images"))
    script = Path(__file__).with_name("demo_cluster.py")
    sys.stdout.flush()  # exec drops what is still buffered
    os.execve(VENV_PYTHON, [str(VENV_PYTHON), str(script), "up"], {**os.environ, T0_ENV: repr(t0)})


if __name__ == "__main__":
    main()
