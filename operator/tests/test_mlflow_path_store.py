"""Registry models whose artifacts are paths that only the tracking server reads (``mlflow server
--no-serve-artifacts --default-artifact-root /mnt/artifacts``: a volume, such as a PVC, that it and the training
jobs mount, and the cluster's pods do not): pinned and hashed through the tracking server's own routes, and
downloaded by the model server the same way. A real tracking server on loopback, its models logged with the real
client straight to the path."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import mlflow.sklearn
import pytest
from mlmodel_operator import mlflow_client, registry
from mlmodel_operator.registry import Pin, RegistryError
from mlmodel_testing.mlflow import Server, register, tracking_server
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from mlmodel_server.fetch import fetch, file_sha256


@dataclass(frozen=True)
class Volume:
    """The tracking server, the path its artifacts are kept under, and what was logged there: iris v1 (alias
    champion) from a run, and a run whose plain artifacts hold a model under ``legacy/``."""

    server: Server
    root: Path
    run_id: str
    artifacts_run_id: str


@pytest.fixture(scope="module")
def volume(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Volume]:
    work = tmp_path_factory.mktemp("mlflow")
    root = work / "volume"
    root.mkdir()
    with tracking_server(work, root=root) as server:
        x, y = load_iris(return_X_y=True, as_frame=True)
        register(server.url, "iris", LogisticRegression(max_iter=300).fit(x, y), alias="champion")
        saved = work / "saved"
        mlflow.sklearn.save_model(
            DecisionTreeClassifier().fit(x, y), saved, serialization_format="cloudpickle", pip_requirements=[]
        )
        with mlflow.start_run() as run:
            mlflow.log_artifacts(str(saved), "legacy")
        logged = mlflow.MlflowClient(server.url).get_model_version("iris", "1").run_id
        assert logged is not None
        yield Volume(server, root, logged, run.info.run_id)


def _resolve(uri: str, volume: Volume) -> Pin:
    ref = registry.parse(uri)
    assert ref is not None
    return mlflow_client.resolve(ref, volume.server.url, None, timeout=10.0, digests={})


def _on_the_volume(volume: Volume, name: str) -> str:
    """The sha256 of the one file called ``name`` under the volume's root, read there."""
    (path,) = volume.root.rglob(name)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_alias_pins_the_file_on_the_volume_read_through_the_tracking_server(volume: Volume) -> None:
    pin = _resolve("models:/iris@champion", volume)
    url = volume.server.url
    assert pin.uri == f"{url}/model-versions/get-artifact?name=iris&version=1&path=model.skops#model.skops"
    assert (pin.version, pin.describe(), pin.sha256) == ("1", "iris@champion → v1", _on_the_volume(volume, "*.skops"))
    assert pin.source.startswith("models:/m-")


def test_a_run_s_logged_model_and_its_plain_artifacts_pin_through_their_own_routes(volume: Volume) -> None:
    logged = _resolve(f"runs:/{volume.run_id}/model", volume)
    model_id = _resolve("models:/iris/1", volume).source.removeprefix("models:/")
    url = volume.server.url
    routes = f"{url}/ajax-api/2.0/mlflow/logged-models/{model_id}/artifacts/files"
    assert logged.uri == f"{routes}?artifact_file_path=model.skops#model.skops"
    assert logged.sha256 == _on_the_volume(volume, "*.skops")
    legacy = _resolve(f"runs:/{volume.artifacts_run_id}/legacy", volume)
    assert legacy.uri == f"{url}/get-artifact?run_id={volume.artifacts_run_id}&path=legacy%2Fmodel.pkl#model.pkl"
    assert legacy.sha256 == _on_the_volume(volume, "model.pkl")


def test_the_model_server_downloads_the_pinned_file_by_its_name_and_digest(volume: Volume, tmp_path: Path) -> None:
    for uri in ("models:/iris@champion", f"runs:/{volume.artifacts_run_id}/legacy"):
        pin = _resolve(uri, volume)
        got = fetch(pin.uri, sha256=pin.sha256, cache_dir=tmp_path, allow_unpinned=False, timeout=10.0, retries=1)
        assert (got.name, file_sha256(got)) == (pin.uri.rsplit("#", 1)[1], pin.sha256)


def test_a_file_gone_from_the_volume_is_not_found(volume: Volume) -> None:
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(next(volume.root.rglob("MLmodel"))), "empty")
    with pytest.raises(RegistryError) as refused:  # an MLmodel that names a model file the volume lacks
        _resolve(f"runs:/{run.info.run_id}/empty", volume)
    assert refused.value.reason == registry.MODEL_NOT_FOUND, refused.value
