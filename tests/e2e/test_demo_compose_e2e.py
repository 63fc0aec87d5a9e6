"""``make demo-compose`` and ``make demo-compose-down``, run as the Makefile runs them (``hack/demo/demo_compose.py``
in the virtualenv) on the images the ``images`` fixture built: no cluster.

The demo runs in a directory, Compose project and ports of its own, not ``.demo-compose/``, ``mlmodel-demo`` and
8080/9090, so that it never meets a user's demo; and without its ``make images`` step, which the fixture has done.
What it prints is checked: its three moves, each split within a binomial bound of its weight (4.5 standard
deviations; exactly none at 0 % and all at 100 %) with no failed request and no container recreated, the router's
and Prometheus's URLs, and a curl that answers as printed. A second demo on the same port fails on its first step,
saying the port is taken. Then ``down`` leaves no container, network or volume of the project, and no directory.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mlmodel_demo.compose import Demo
from mlmodel_demo.report import Split
from mlmodel_testing.cluster import REPO, free_port

SCRIPT = [str(REPO / ".venv" / "bin" / "python"), str(REPO / "hack" / "demo" / "demo_compose.py")]


def demo_command(demo: Demo, command: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """``demo_compose.py COMMAND`` for ``demo``, from the repository's root as ``make`` runs it."""
    argv = [*SCRIPT, command, "--project", demo.name, "--state", str(demo.state), *extra]
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)


def splits(printed: str) -> list[Split]:
    """The rows of the split table the demo printed."""
    rows = [line.split("|")[1:-1] for line in printed.splitlines() if re.match(r"\|\s+\d+ % \|", line)]
    return [
        Split(int(weight.strip(" %")), float(after.strip(" s")), {"stable": int(stable), "canary": int(canary)}, int(f))
        for weight, after, _, stable, canary, f, _ in rows
    ]


@pytest.fixture
def demo(tmp_path: Path, images: None, call_failed: Callable[[], bool]) -> Iterator[Demo]:
    """A demo's directory, project and ports; taken down after the test whatever happened (its logs printed if
    the test failed)."""
    demo = Demo(tmp_path / "demo-compose", f"mlmodel-e2e-demo-{uuid.uuid4().hex[:8]}", free_port(), free_port())
    try:
        yield demo
        if call_failed():
            print(demo.project.logs() if demo.project.file.exists() else "(not rendered)")
            for log in sorted(demo.logs.glob("*.log")):
                print(f"===== {log.name}\n{log.read_text()[-3000:]}")
    finally:
        demo.project.down()


def test_the_demo_moves_the_weights_prints_each_split_and_where_it_runs_and_down_leaves_nothing(demo: Demo) -> None:
    ports = ("--port", str(demo.port), "--prometheus-port", str(demo.prometheus_port))
    up = demo_command(demo, "up", *ports, "--no-images")
    assert up.returncode == 0, f"{up.stdout}\n{up.stderr}"
    printed = up.stdout

    seen = splits(printed)
    assert [s.weight for s in seen] == [50, 100, 10], printed  # the three moves, in order
    for s in seen:
        assert s.requests == 200 and s.failed == 0, s
        assert s.within_bound("canary"), s
    assert "No container was recreated" in printed, printed
    assert f"  the router   http://127.0.0.1:{demo.port}" in printed
    assert f"  Prometheus   http://127.0.0.1:{demo.prometheus_port}" in printed
    assert re.search(r"^\[demo .*\] Prometheus, .* done .*: 3 targets up", printed, re.M), printed

    (curl,) = [line.strip() for line in printed.splitlines() if line.startswith("  curl -si") and "canary" not in line]
    answer = subprocess.run(["bash", "-c", curl], cwd=REPO, capture_output=True, text=True, timeout=30, check=False)
    assert answer.returncode == 0 and answer.stdout.startswith("HTTP/1.1 200"), answer
    assert re.search(r"^X-Model-Variant: (stable|canary)\r?$", answer.stdout, re.M), answer.stdout
    assert re.search(r"^X-Router-Weights: stable=90,canary=10\r?$", answer.stdout, re.M), answer.stdout  # left so

    other = Demo(demo.state.with_name("other"), f"{demo.name}-other", demo.port, free_port())
    try:
        taken = demo_command(other, "up", "--port", str(other.port), "--prometheus-port", str(other.prometheus_port))
    finally:
        other.project.down()
    assert taken.returncode == 1, taken
    assert f"127.0.0.1:{demo.port} is taken" in taken.stderr, taken.stderr
    assert taken.stdout.startswith("[demo"), taken.stdout  # the ports are the first step: nothing else ran

    down = demo_command(demo, "down")
    assert down.returncode == 0, f"{down.stdout}\n{down.stderr}"
    assert "no container, network or volume left" in down.stdout, down.stdout
    assert demo.project.leftovers() == {"containers": [], "networks": [], "volumes": []}
    assert not demo.state.exists()
