"""Chart tests run the real tools: ``.venv/bin/helm``, ``promtool`` and ``kubeconform``, which
``make install`` builds (``hack/tools.py``). A missing tool fails the test; nothing is skipped."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "mlmodel"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
GOLDEN = Path(__file__).resolve().parent / "golden"
BIN = REPO / ".venv" / "bin"
RELEASE = "mlmodel"
NAMESPACE = "mlmodel-system"


def tool(name: str) -> Path:
    """A tool linked into .venv/bin by ``make install``."""
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make install`", pytrace=False)
    return path


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([str(tool("helm")), *args], capture_output=True, text=True, timeout=120, check=False)
    if check and p.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def render(*args: str, release: str = RELEASE) -> list[dict[str, Any]]:
    """The chart's objects, as ``helm template`` renders them (tests included)."""
    out = helm("template", release, str(CHART), "--namespace", NAMESPACE, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
