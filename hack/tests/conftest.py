"""Tests of the CI helpers in ``hack/``: its modules import as top-level ones, as ``make`` runs them."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

pytest_plugins = ["pytester"]
