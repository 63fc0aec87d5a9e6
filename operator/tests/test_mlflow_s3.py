"""Registry models whose artifacts are in an S3 store, resolved (``mlflow_client``) with the store's keys: a real
MinIO on loopback (``mlmodel_testing.minio``) and a real MLflow tracking server that points at it (``--no-serve-
artifacts``, artifacts under ``s3://models/``), the model logged there by MLflow's own client (boto3). The operator
reads the ``MLmodel`` file and hashes the model file with requests it signs itself (``sigv4``); what the store
refuses is told in its words, never with the keys; and the model server downloads and verifies what was pinned.
Runs in ``make test-s3``, beside the server's downloads."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
import s3fs
import yaml
from mlmodel_operator import cli, mlflow_client, registry
from mlmodel_operator.registry import Credentials, Pin, RegistryError, S3Keys
from mlmodel_testing.minio import Store, minio
from mlmodel_testing.mlflow import TREE, Server, register, s3_client_env, tracking_server
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from mlmodel_server.fetch import fetch

WRONG = "wr0ng-secret-of-the-right-key"


@dataclass(frozen=True)
class Registered:
    """What the tracking server holds: iris v1 (a linear model, alias champion) and v2 (a tree)."""

    run_id: str  # the run that logged v1


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with minio(tmp_path_factory.mktemp("minio")) as running:
        yield running


@pytest.fixture(scope="module")
def server(store: Store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with tracking_server(tmp_path_factory.mktemp("mlflow-s3"), s3=store) as running:
        yield running


@pytest.fixture(scope="module")
def registered(server: Server, store: Store) -> Registered:
    x, y = load_iris(return_X_y=True, as_frame=True)
    with pytest.MonkeyPatch.context() as env:  # the client writes to the store itself, with its keys
        for name, value in s3_client_env(store).items():
            env.setenv(name, value)
        register(server.url, "iris", LogisticRegression(max_iter=300).fit(x, y), alias="champion")
        register(server.url, "iris", DecisionTreeClassifier(max_depth=2).fit(x, y), skops_trusted_types=[TREE])
    run_id = mlflow.MlflowClient(server.url).get_model_version("iris", "1").run_id
    assert run_id is not None
    return Registered(run_id)


def _keys(store: Store) -> Credentials:
    """The store's keys, as the operator reads them from spec.mlflow.credentialsSecret."""
    return Credentials(s3=S3Keys(store.user, store.secret, store.endpoint))


def _resolve(uri: str, server: Server, credentials: Credentials | None, digests: dict[str, str] | None = None) -> Pin:
    ref = registry.parse(uri)
    assert ref is not None
    return mlflow_client.resolve(ref, server.url, credentials, timeout=10, digests={} if digests is None else digests)


def _refused(
    uri: str, server: Server, credentials: Credentials | None, digests: dict[str, str] | None = None
) -> RegistryError:
    with pytest.raises(RegistryError) as refused:
        _resolve(uri, server, credentials, digests)
    return refused.value


def _stored_sha256(store: Store, url: str) -> str:
    """The digest of the object at ``url``, read from the store with s3fs (not with the operator's requests)."""
    return hashlib.sha256(store.filesystem().cat_file(url.removeprefix("s3://"))).hexdigest()


def test_an_alias_pins_the_model_file_in_the_store_with_the_object_s_digest(
    server: Server, store: Store, registered: Registered
) -> None:
    pin = _resolve("models:/iris@champion", server, _keys(store))
    assert (pin.version, pin.run_id, pin.describe()) == ("1", registered.run_id, "iris@champion → v1")
    model_id = pin.source.removeprefix("models:/")
    assert pin.uri == f"s3://{store.bucket}/0/models/{model_id}/artifacts/model.skops"
    assert pin.sha256 == _stored_sha256(store, pin.uri)
    assert pin.sklearn_version is not None


def test_the_pinned_file_is_what_the_server_downloads_and_verifies(
    server: Server, store: Store, registered: Registered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model server's own download (s3fs, with the variables a pod gets from the Secret) of the pin."""
    pin = _resolve("models:/iris@champion", server, _keys(store))
    for name, value in store.env().items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()  # its clients keep the keys they were made with
    got = fetch(pin.uri, sha256=pin.sha256, cache_dir=tmp_path, allow_unpinned=False, timeout=10.0, retries=1)
    assert got.name == "model.skops" and hashlib.sha256(got.read_bytes()).hexdigest() == pin.sha256


def test_a_version_number_and_a_run_pin_their_own_files(server: Server, store: Store, registered: Registered) -> None:
    v1, v2 = (_resolve(f"models:/iris/{version}", server, _keys(store)) for version in (1, 2))
    assert v2.uri.startswith(f"s3://{store.bucket}/0/models/") and v2.uri.endswith("/artifacts/model.skops")
    assert v2.sha256 == _stored_sha256(store, v2.uri) != v1.sha256
    run = _resolve(f"runs:/{registered.run_id}/model", server, _keys(store))
    assert (run.uri, run.sha256) == (v1.uri, v1.sha256)


def test_without_s3_keys_the_message_names_the_keys_to_put_in_the_secret(
    server: Server, store: Store, registered: Registered
) -> None:
    for credentials in (None, Credentials(token="for-the-tracking-server")):
        refused = _refused("models:/iris@champion", server, credentials)
        assert refused.reason == "CredentialsUnavailable"
        assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL" in refused.message
        assert "spec.mlflow.credentialsSecret" in refused.message
        assert f"s3://{store.bucket}/0/models/" in refused.message


def test_keys_the_store_refuses_are_unauthorized_in_its_words_and_never_told(
    server: Server, store: Store, registered: Registered
) -> None:
    digests: dict[str, str] = {}
    good = _resolve("models:/iris@champion", server, _keys(store), digests)
    wrong_secret = Credentials(s3=S3Keys(store.user, WRONG, store.endpoint))
    # Resolved before with the right keys: the digest kept then is no proof that the wrong ones read the file.
    refused = _refused("models:/iris@champion", server, wrong_secret, digests)
    assert refused.reason == "RegistryUnauthorized"
    assert refused.message.startswith(f"HTTP 403 from s3://{store.bucket}/0/models/")
    assert "SignatureDoesNotMatch: The request signature we calculated does not match" in refused.message
    for told in (str(refused), repr(refused), repr(wrong_secret)):
        assert WRONG not in told and store.secret not in told
    unknown = Credentials(s3=S3Keys("no-such-access-key", store.secret, store.endpoint))
    refused = _refused("models:/iris@champion", server, unknown)
    assert refused.reason == "RegistryUnauthorized" and "InvalidAccessKeyId" in refused.message
    assert store.secret not in str(refused) and "no-such-access-key" not in str(refused)
    assert _resolve("models:/iris@champion", server, _keys(store), digests) == good


def test_a_missing_object_is_not_found_in_the_store_s_words(
    server: Server, store: Store, registered: Registered
) -> None:
    refused = _refused(f"runs:/{registered.run_id}/nope", server, _keys(store))
    assert (refused.reason, refused.message) == (
        "ModelNotFound",
        f"HTTP 404 from s3://{store.bucket}/0/{registered.run_id}/artifacts/nope/MLmodel: NoSuchKey: The specified "
        "key does not exist.",
    )


def test_a_store_that_does_not_answer_is_unreachable(server: Server, store: Store, registered: Registered) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    keys = Credentials(s3=S3Keys(store.user, store.secret, f"http://127.0.0.1:{port}"))
    refused = _refused("models:/iris/1", server, keys)
    assert refused.reason == "RegistryUnreachable"
    assert refused.message.startswith(f"cannot reach the S3 store http://127.0.0.1:{port} (for s3://{store.bucket}/")
    assert refused.message.endswith("Connection refused")


def test_compose_render_pins_with_the_keys_of_its_environment_and_hands_them_to_the_servers(
    server: Server, store: Store, registered: Registered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = tmp_path / "iris.yaml"
    spec = {"variants": [{"name": "stable", "modelUri": "models:/iris@champion", "weight": 100}]}
    md = {"apiVersion": "mlmodel.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "iris"}, "spec": spec}
    example.write_text(yaml.safe_dump(md))
    for name, value in store.env().items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "compose.yaml"
    assert cli.main(["compose", "render", str(example), "-o", str(out), "--mlflow-tracking-uri", server.url]) == 0
    environment = yaml.safe_load(out.read_text())["services"]["iris-stable"]["environment"]
    pinned = _resolve("models:/iris@champion", server, _keys(store))
    assert (environment["MODEL_URI"], environment["MODEL_SHA256"]) == (pinned.uri, pinned.sha256)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION"):
        assert name in environment and environment[name] is None  # from the shell that runs docker compose
    assert store.secret not in out.read_text()
