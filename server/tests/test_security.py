"""A pickle that would run code when loaded is refused on its digest, before any unpickling."""

from __future__ import annotations

import hashlib
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from mlmodel_server import errors
from mlmodel_server.model import load


class _Payload:
    """Unpickling this writes ``marker``: the attack the digest check must stop."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.write_text, (self.marker, "code ran during unpickling"))


@pytest.fixture
def evil(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    model = tmp_path / "model.pkl"
    model.write_bytes(pickle.dumps(_Payload(marker)))
    return model, marker


def test_the_payload_is_live(evil: tuple[Path, Path]) -> None:
    """Without the check, loading really would run the code (so the tests below can fail)."""
    model, marker = evil
    subprocess.run([sys.executable, "-c", f"import joblib; joblib.load({str(model)!r})"], check=False)
    assert marker.read_text() == "code ran during unpickling"


def test_wrong_digest_is_refused_before_unpickling(evil: tuple[Path, Path]) -> None:
    model, marker = evil
    with pytest.raises(errors.DigestMismatch, match=r"expected 0{64}, got [0-9a-f]{64}"):
        load(model, source=str(model), sha256="0" * 64)
    assert not marker.exists()


@pytest.mark.parametrize("mode", ["--preload", "--no-preload"])
def test_the_server_refuses_to_start(evil: tuple[Path, Path], tmp_path: Path, mode: str) -> None:
    """Exit 2, both digests in the log and in the termination message, no traceback, and nothing unpickled."""
    model, marker = evil
    actual = hashlib.sha256(model.read_bytes()).hexdigest()
    wrong = "1" * 64
    termination = tmp_path / "termination-log"
    termination.touch()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlmodel_server",
            "--model-uri",
            f"file://{model}",
            "--model-sha256",
            wrong,
            "--port",
            "1",
            mode,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path), "TERMINATION_LOG": str(termination)},
    )
    assert result.returncode == 2
    for text in (result.stdout, termination.read_text()):
        assert wrong in text and actual in text
    assert "Traceback" not in result.stdout + result.stderr
    assert not marker.exists()
