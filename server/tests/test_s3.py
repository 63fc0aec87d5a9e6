"""``s3://`` models from a real S3-compatible store: a MinIO server on loopback (``mlmodel_testing.minio``), reached
with the AWS SDK's environment variables as a pod gets them from a Secret. Downloads pinned, cached, whole
directories (an MLflow model's), a missing key and refused credentials each ended at once; and a server started on
an ``s3://`` URI answers."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import s3fs
from mlmodel_testing.minio import BUCKET, SECRET, Store, minio

from mlmodel_server.errors import CredentialsRefused, DigestMismatch, ModelLoadError
from mlmodel_server.fetch import fetch

from conftest import SavedModel, start, stop, wait_ready


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with minio(tmp_path_factory.mktemp("minio")) as running:
        yield running


@pytest.fixture
def aws(store: Store, monkeypatch: pytest.MonkeyPatch) -> Store:
    """The AWS SDK's variables set for ``store``, and s3fs's cached clients dropped (they keep old credentials)."""
    for name, value in store.env().items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()
    return store


def _fetch(uri: str, cache: Path, sha256: str | None) -> Path:
    return fetch(uri, sha256=sha256, cache_dir=cache, allow_unpinned=sha256 is None, timeout=5.0, retries=3)


def test_a_model_is_downloaded_pinned_then_found_in_the_cache(
    aws: Store, models: dict[str, SavedModel], tmp_path: Path
) -> None:
    iris = models["iris"]
    uri = aws.put(iris.path, "pinned/iris.joblib")
    got = _fetch(uri, tmp_path, iris.sha256)
    assert got.read_bytes() == iris.path.read_bytes() and got.parent.name == iris.sha256
    aws.put(Path(__file__), "pinned/iris.joblib")  # the object changes: the pinned bytes are served from the cache
    assert _fetch(uri, tmp_path, iris.sha256).read_bytes() == iris.path.read_bytes()


def test_a_wrong_digest_leaves_nothing_in_the_cache(aws: Store, models: dict[str, SavedModel], tmp_path: Path) -> None:
    uri = aws.put(models["iris"].path, "digest/iris.joblib")
    with pytest.raises(DigestMismatch, match="sha256 mismatch"):
        _fetch(uri, tmp_path, "ab" * 32)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_a_directory_comes_whole(aws: Store, tmp_path: Path) -> None:
    """An MLflow model is a directory (``MLmodel``, the pickle, its environment files)."""
    model = tmp_path / "src" / "model"
    model.mkdir(parents=True)
    files = {"MLmodel": b"flavors: {}\n", "model.pkl": b"\x80\x05 bytes", "requirements.txt": b"scikit-learn\n"}
    for name, data in files.items():
        (model / name).write_bytes(data)
    uri = aws.put(model, "mlflow/model")
    got = _fetch(uri + "/", tmp_path / "cache", None)
    assert {p.name: p.read_bytes() for p in got.iterdir()} == files


def _retries(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The retry warnings ``fetch`` logged: a download ended at once logs none (counted, not timed: a loaded CI
    machine takes seconds to build an S3 client)."""
    return [r.getMessage() for r in caplog.records if r.name == "mlmodel_server.fetch" and "retrying" in r.getMessage()]


def test_a_missing_key_is_not_found_at_once(aws: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mlmodel_server.fetch")
    with pytest.raises(ModelLoadError, match=r"model not found: s3://models/absent.joblib does not exist \(404\)"):
        _fetch(f"s3://{BUCKET}/absent.joblib", tmp_path, "ab" * 32)
    assert _retries(caplog) == []


def test_refused_credentials_end_the_download_at_once_and_are_not_shown(
    aws: Store,
    models: dict[str, SavedModel],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="mlmodel_server.fetch")
    uri = aws.put(models["iris"].path, "refused/iris.joblib")
    wrong = "wr0ng-secret-value"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    s3fs.S3FileSystem.clear_instance_cache()
    with pytest.raises(CredentialsRefused, match="check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") as refused:
        _fetch(uri, tmp_path, models["iris"].sha256)
    assert _retries(caplog) == []
    assert wrong not in str(refused.value) and SECRET not in str(refused.value)


def test_a_server_started_on_an_s3_uri_answers(store: Store, models: dict[str, SavedModel], tmp_path: Path) -> None:
    iris = models["iris"]
    uri = store.put(iris.path, "served/iris.joblib")
    server = start(tmp_path, "--model-uri", uri, "--model-sha256", iris.sha256, env=store.env())
    try:
        wait_ready(server)
        answer = requests.post(server.url + "/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]}, timeout=5)
        assert answer.status_code == 200 and answer.json()["predictions"] == [0], answer.text
        assert SECRET not in server.logs()
    finally:
        stop(server)
