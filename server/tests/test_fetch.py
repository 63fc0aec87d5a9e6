"""Fetching: local paths as they are; downloads over real HTTP on loopback, atomic and pinned."""

from __future__ import annotations

import base64
import hashlib
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from mlmodel_server import errors
from mlmodel_server.fetch import Credentials, fetch, local_path, redact_uri

from conftest import Origin

PAYLOAD = b"model bytes " * 1000
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()
MODEL_PATH = "/models/m.joblib"
TOKEN = "t0k3n-from-a-secret"


@pytest.fixture
def origin(origin: Origin) -> Origin:
    """conftest's origin, serving the model."""
    origin.files[MODEL_PATH] = PAYLOAD
    return origin


def _url(origin: Origin, path: str = MODEL_PATH) -> str:
    return origin.url(path)


def _fetch(uri: str, cache: Path, sha256: str | None = DIGEST, **kw: object) -> Path:
    options: dict[str, object] = {"allow_unpinned": False, "timeout": 5.0, "retries": 3, **kw}
    return fetch(uri, sha256=sha256, cache_dir=cache, **options)  # type: ignore[arg-type]


def test_plain_path_and_file_uri(tmp_path: Path) -> None:
    model = tmp_path / "m.joblib"
    model.write_bytes(b"x")
    assert _fetch(str(model), tmp_path / "cache", sha256=None) == model
    assert _fetch(f"file://{model}", tmp_path / "cache", sha256=None) == model
    with pytest.raises(errors.ModelLoadError, match=r"model not found"):
        _fetch(str(tmp_path / "absent.joblib"), tmp_path / "cache")


def test_unsupported_scheme_and_file_host() -> None:
    with pytest.raises(errors.ModelLoadError, match=r"unsupported model URI scheme 'ftp'"):
        local_path("ftp://host/m.joblib")
    with pytest.raises(errors.ModelLoadError, match=r"names host"):
        local_path("file://host/m.joblib")


def test_download_is_pinned_cached_and_reused(origin: Origin, tmp_path: Path) -> None:
    path = _fetch(_url(origin), tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert path == tmp_path / DIGEST / "m.joblib"
    hits = origin.hits
    assert _fetch(_url(origin), tmp_path) == path
    assert origin.hits == hits  # served from the cache


def test_remote_without_digest_is_refused_unless_allowed(origin: Origin, tmp_path: Path) -> None:
    with pytest.raises(errors.UnpinnedModel, match=r"--model-sha256.*--allow-unpinned"):
        _fetch(_url(origin), tmp_path, sha256=None)
    assert origin.hits == 0
    assert _fetch(_url(origin), tmp_path, sha256=None, allow_unpinned=True).read_bytes() == PAYLOAD


def test_wrong_digest_leaves_nothing_in_the_cache(origin: Origin, tmp_path: Path) -> None:
    with pytest.raises(errors.DigestMismatch, match=rf"expected {'f' * 64}, got {DIGEST}"):
        _fetch(_url(origin), tmp_path, sha256="f" * 64)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_transient_failures_are_retried(origin: Origin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mlmodel_server.fetch.time.sleep", lambda _: None)
    origin.failures = 2
    assert _fetch(_url(origin), tmp_path).read_bytes() == PAYLOAD


def test_permanent_failure_names_the_uri_and_attempts(
    origin: Origin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("mlmodel_server.fetch.time.sleep", lambda _: None)
    origin.failures = 5
    with pytest.raises(errors.ModelLoadError, match=rf"could not download {_url(origin)} after 2 attempts"):
        _fetch(_url(origin), tmp_path, retries=2)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize(
    ("credentials", "header"),
    [
        (Credentials(token=TOKEN), f"Bearer {TOKEN}"),
        (
            Credentials(username="reader", password=TOKEN),
            "Basic " + base64.b64encode(f"reader:{TOKEN}".encode()).decode(),
        ),
    ],
    ids=["token", "basic"],
)
def test_credentials_go_with_the_download(
    origin: Origin, tmp_path: Path, credentials: Credentials, header: str
) -> None:
    origin.authorization = header
    assert _fetch(_url(origin), tmp_path, credentials=credentials).read_bytes() == PAYLOAD
    assert origin.seen and set(origin.seen) == {header}
    assert TOKEN not in repr(credentials)


@pytest.mark.parametrize(
    ("credentials", "refusal", "words"),
    [
        (None, 401, "needs credentials (HTTP 401): set MLFLOW_TRACKING_TOKEN"),
        (Credentials(token="wr0ng"), 401, "refused the credentials (HTTP 401): check MLFLOW_TRACKING_TOKEN"),
        (Credentials(username="reader", password="wr0ng"), 403, "refused the credentials (HTTP 403)"),
    ],
    ids=["none", "wrong-token", "forbidden"],
)
def test_refused_credentials_end_the_download_at_once(
    origin: Origin,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    credentials: Credentials | None,
    refusal: int,
    words: str,
) -> None:
    origin.authorization, origin.refusal = f"Bearer {TOKEN}", refusal
    with caplog.at_level(logging.DEBUG), pytest.raises(errors.CredentialsRefused) as caught:
        _fetch(_url(origin), tmp_path, retries=5, credentials=credentials)
    assert caught.value.message.startswith(_url(origin)) and words in caught.value.message
    assert origin.hits <= 1 and len(origin.seen) <= 2  # fsspec asks with HEAD, then GET; no retry
    for text in (str(caught.value), caplog.text):
        assert "wr0ng" not in text and "Bearer" not in text and "Authorization" not in text
    assert caught.value.__cause__ is None  # aiohttp's error holds the request's headers
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_model_that_is_not_there_is_not_found_at_once(origin: Origin, tmp_path: Path) -> None:
    url = _url(origin, "/models/absent.joblib")
    with pytest.raises(errors.ModelLoadError, match=rf"model not found: {url} does not exist \(404\)"):
        _fetch(url, tmp_path, retries=3)
    assert origin.hits <= 2  # fsspec may ask with HEAD and GET; no retry
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize(
    ("path", "sha256"), [("/models/absent.joblib", DIGEST), ("/models/m.joblib", "ab" * 32)], ids=["404", "digest"]
)
def test_the_server_fails_on_a_missing_or_wrong_model_before_importing_scikit_learn(
    origin: Origin, tmp_path: Path, path: str, sha256: str
) -> None:
    """The server exits 2 on a 404 or a digest mismatch without paying for scikit-learn's import (seconds on a
    busy node), so that a pod with a bad model URI fails, and shows it, at once."""
    argv = ["--model-uri", _url(origin, path), "--model-sha256", sha256, "--cache-dir", str(tmp_path)]
    ran = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mlmodel_server", *argv], capture_output=True, text=True, timeout=60
    )
    imported = {line.rsplit("|", 1)[-1].strip() for line in ran.stderr.splitlines() if line.startswith("import time:")}
    assert ran.returncode == 2, ran.stderr[-2000:]
    assert "mlmodel_server.fetch" in imported and "sklearn" not in imported


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        (
            "https://user:pa55@host.example/m/model.pkl?X-Amz-Signature=abc&token=t0k#frag",
            "https://host.example/m/model.pkl",
        ),
        ("s3://AKIA:secret@bucket/key.pkl", "s3://bucket/key.pkl"),
        ("https://host.example:8443/model.pkl", "https://host.example:8443/model.pkl"),
        ("/models/iris.pkl", "/models/iris.pkl"),
    ],
)
def test_redact_uri(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown


def test_errors_never_carry_uri_credentials(tmp_path: Path) -> None:
    uri = "https://user:pa55@host.example/model.pkl?X-Amz-Signature=s3cr3t"
    with pytest.raises(errors.UnpinnedModel) as caught:
        fetch(uri, sha256=None, cache_dir=tmp_path, allow_unpinned=False, timeout=1, retries=1)
    assert "pa55" not in str(caught.value) and "s3cr3t" not in str(caught.value)
    assert "https://host.example/model.pkl" in str(caught.value)
