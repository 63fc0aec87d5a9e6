"""Golden files: a rendering compared with the file under ``golden/`` that a reviewer approved."""

from __future__ import annotations

import os
from pathlib import Path

GOLDEN = Path(__file__).parent / "golden"


def assert_golden(path: Path, rendered: str) -> None:
    """``rendered`` is ``path``'s text; with ``UPDATE_GOLDEN=1`` it becomes it (review the diff)."""
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rendered)
    assert rendered == path.read_text(), f"{path.name} differs: run UPDATE_GOLDEN=1 pytest and review the diff"
