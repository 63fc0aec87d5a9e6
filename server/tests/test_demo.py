"""``make demo-local`` runs server/examples/demo.py: it must train, serve, answer and stop cleanly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import free_port

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.py"


def test_demo_shows_live_predictions(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(DEMO), "--workdir", str(tmp_path), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert '{"predictions":[0],"probabilities":[[1.0,0.0,0.0]]}' in result.stdout
    assert '"wrong_feature_count"' in result.stdout
    assert "server stopped" in result.stdout
