"""Registry model URIs resolved (``mlflow_client``) on a real MLflow tracking server on loopback, its models registered
with the real client: the version an alias or a number names, a run's model, the model file's digest, what the
registry refuses in its own words, and the requests it takes (counted in its access log)."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import mlflow.sklearn
import pytest
import sklearn
import yaml
from mlflow.pyfunc.model import PythonModel
from mlmodel_operator import cli, mlflow_client, registry
from mlmodel_operator.registry import Credentials, Pin, RegistryError
from mlmodel_testing.mlflow import Server, register, tracking_server
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier
from test_compose import DOCKER_COMPOSE, REPO

TREE = "sklearn.tree._tree.Tree"  # what skops loads a decision tree with only when told to trust it
CHAMPION = "GET /api/2.0/mlflow/registered-models/alias?name=iris&alias=champion"


@dataclass(frozen=True)
class Models:
    """What the module's tracking server holds: iris v1 (alias champion, with a signature) and v2 (a tree), a run's
    model kept as plain artifacts (as MLflow 2 logged them), and a model of the python_function flavor alone."""

    run_id: str  # the run that logged iris v1
    artifacts_run_id: str  # the run whose artifacts hold a model under legacy/


class _Echo(PythonModel):
    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        return model_input


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with tracking_server(tmp_path_factory.mktemp("mlflow")) as running:
        yield running


@pytest.fixture(scope="module")
def models(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Models:
    x, y = load_iris(return_X_y=True, as_frame=True)
    register(server.url, "iris", LogisticRegression(max_iter=300).fit(x, y), alias="champion", input_example=x[:2])
    tree = DecisionTreeClassifier(max_depth=2).fit(x, y)
    register(server.url, "iris", tree, skops_trusted_types=[TREE])
    saved = tmp_path_factory.mktemp("saved") / "model"
    mlflow.sklearn.save_model(
        DecisionTreeClassifier().fit(x, y), saved, serialization_format="cloudpickle", pip_requirements=[]
    )
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(saved), "legacy")
        mlflow.pyfunc.log_model(name="model", python_model=_Echo(), registered_model_name="echo", pip_requirements=[])
    logged = mlflow.MlflowClient(server.url).get_model_version("iris", "1").run_id
    assert logged is not None
    return Models(logged, run.info.run_id)


def _resolve(
    uri: str, server: Server, digests: dict[str, str] | None = None, credentials: Credentials | None = None
) -> Pin:
    ref = registry.parse(uri)
    assert ref is not None
    return mlflow_client.resolve(ref, server.url, credentials, timeout=10, digests={} if digests is None else digests)


def _refused(uri: str, server: Server, credentials: Credentials | None = None) -> RegistryError:
    with pytest.raises(RegistryError) as refused:
        _resolve(uri, server, credentials=credentials)
    return refused.value


def _sha256(url: str, credentials: Credentials | None = None) -> str:
    """The digest of the file at ``url``, downloaded here."""
    request = urllib.request.Request(url, headers=registry.headers(credentials))
    with urllib.request.urlopen(request, timeout=10) as answer:
        return hashlib.sha256(answer.read()).hexdigest()


def test_an_alias_pins_its_version_s_model_file_whose_digest_is_the_file_s(server: Server, models: Models) -> None:
    pin = _resolve("models:/iris@champion", server)
    assert (pin.version, pin.run_id, pin.describe()) == ("1", models.run_id, "iris@champion → v1")
    assert pin.source.startswith("models:/m-")
    model_id = pin.source.removeprefix("models:/")
    assert pin.uri == f"{server.url}/api/2.0/mlflow-artifacts/artifacts/0/models/{model_id}/artifacts/model.skops"
    assert pin.sha256 == _sha256(pin.uri)
    assert pin.sklearn_version == sklearn.__version__
    assert [column["name"] for column in json.loads(str(pin.input_schema))] == list(load_iris().feature_names)


def test_a_moved_alias_pins_the_version_it_names_now(server: Server, models: Models) -> None:
    client, digests = mlflow.MlflowClient(server.url), dict[str, str]()
    client.set_registered_model_alias("iris", "challenger", "1")
    first = _resolve("models:/iris@challenger", server, digests)
    client.set_registered_model_alias("iris", "challenger", "2")
    moved = _resolve("models:/iris@challenger", server, digests)
    assert (first.version, moved.version, moved.describe()) == ("1", "2", "iris@challenger → v2")
    assert moved.sha256 == _sha256(moved.uri) != first.sha256
    assert moved.input_schema is None  # v2 was logged without an example: no signature
    assert (first.skops_trusted, moved.skops_trusted) == ((), (TREE,))


def test_a_version_number_pins_that_version(server: Server, models: Models) -> None:
    pin = _resolve("models:/iris/2", server)
    assert (pin.version, pin.describe()) == ("2", "iris/2 → v2")
    assert pin.sha256 == _sha256(pin.uri)


def test_a_run_s_model_is_the_logged_model_it_made_or_a_directory_of_its_artifacts(
    server: Server, models: Models
) -> None:
    logged = _resolve(f"runs:/{models.run_id}/model", server)
    assert (logged.version, logged.run_id) == (None, models.run_id)
    assert logged.describe() == f"runs:/{models.run_id[:8]}…/model"
    v1 = _resolve("models:/iris/1", server)
    assert (logged.uri, logged.sha256, logged.input_schema) == (v1.uri, v1.sha256, v1.input_schema)
    assert logged.source == f"mlflow-artifacts:/0/models/{v1.source.removeprefix('models:/')}/artifacts"
    # A model saved as a run's artifacts (MLflow 2's log_model), pickled with cloudpickle.
    legacy = _resolve(f"runs:/{models.artifacts_run_id}/legacy", server)
    assert legacy.uri == (
        f"{server.url}/api/2.0/mlflow-artifacts/artifacts/0/{models.artifacts_run_id}/artifacts/legacy/model.pkl"
    )
    assert legacy.source == f"mlflow-artifacts:/0/{models.artifacts_run_id}/artifacts/legacy"
    assert legacy.sha256 == _sha256(legacy.uri)


def test_a_resolved_version_costs_one_request_the_lookup(server: Server, models: Models) -> None:
    digests: dict[str, str] = {}
    seen = len(server.requests())
    first = _resolve("models:/iris@champion", server, digests)
    cold = server.requests()[seen:]
    model = first.source.removeprefix("models:/")
    artifacts = f"GET /api/2.0/mlflow-artifacts/artifacts/0/models/{model}/artifacts"
    assert cold == [
        CHAMPION,
        "GET /api/2.0/mlflow/model-versions/get-download-uri?name=iris&version=1",
        f"{artifacts}/MLmodel",
        f"{artifacts}/model.skops",
    ]
    assert _resolve("models:/iris@champion", server, digests) == first
    assert server.requests()[seen + len(cold) :] == [CHAMPION]


def test_a_resolved_run_costs_one_request_the_run(server: Server, models: Models) -> None:
    digests: dict[str, str] = {}
    seen = len(server.requests())
    first = _resolve(f"runs:/{models.run_id}/model", server, digests)
    run = f"GET /api/2.0/mlflow/runs/get?run_id={models.run_id}"
    assert server.requests()[seen : seen + 2] == [run, "POST /api/2.0/mlflow/logged-models/search"]
    seen = len(server.requests())
    assert _resolve(f"runs:/{models.run_id}/model", server, digests) == first
    assert server.requests()[seen:] == [run]


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("models:/nope@champion", "Registered Model with name=nope not found"),
        ("models:/iris@nope", "Registered model alias nope not found."),
        ("models:/iris/99", "Model Version (name=iris, version=99) not found"),
        ("models:/nope/1", "Model Version (name=nope, version=1) not found"),
        ("runs:/0123abcd/model", "Run with id=0123abcd not found"),
    ],
)
def test_what_the_registry_does_not_have_is_not_found_in_its_own_words(
    server: Server, models: Models, uri: str, message: str
) -> None:
    refused = _refused(uri, server)
    assert (refused.reason, refused.message) == ("ModelNotFound", message)


def test_a_run_without_that_model_is_not_found(server: Server, models: Models) -> None:
    refused = _refused(f"runs:/{models.run_id}/nope", server)
    assert refused.reason == "ModelNotFound"
    assert refused.message == f"No such artifact: '0/{models.run_id}/artifacts/nope/MLmodel'"


def test_a_model_of_another_flavor_is_refused_naming_its_flavors(server: Server, models: Models) -> None:
    refused = _refused("models:/echo/1", server)
    assert (refused.reason, refused.message) == (
        "UnsupportedFlavor",
        "we serve the sklearn flavor (pickle, cloudpickle or skops); this model has: python_function",
    )


def test_a_registry_that_does_not_answer_is_unreachable() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    refused = _refused("models:/iris@champion", Server(f"http://127.0.0.1:{port}/", Path()))
    assert (refused.reason, refused.message) == (
        "RegistryUnreachable",
        f"cannot reach http://127.0.0.1:{port}: [Errno 111] Connection refused",
    )
    with socket.socket() as silent:  # takes connections, and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        ref, started = registry.parse("models:/iris/1"), time.monotonic()
        assert ref is not None
        with pytest.raises(RegistryError) as refused_in_time:
            mlflow_client.resolve(ref, f"http://127.0.0.1:{silent.getsockname()[1]}", None, timeout=0.5, digests={})
    assert time.monotonic() - started < 5
    assert refused_in_time.value.reason == "RegistryUnreachable"
    assert refused_in_time.value.message.endswith("timed out")


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A tracking server with MLflow's basic auth, holding iris v1 (alias champion)."""
    with tracking_server(tmp_path_factory.mktemp("mlflow-auth"), basic_auth=True) as running:
        x, y = load_iris(return_X_y=True, as_frame=True)
        model = LogisticRegression(max_iter=300).fit(x, y)
        register(running.url, "iris", model, alias="champion", credentials=running.credentials)
        yield running


def test_a_registry_with_basic_auth_pins_with_its_credentials_and_so_downloads(guarded: Server) -> None:
    pin = _resolve("models:/iris@champion", guarded, credentials=guarded.credentials)
    assert pin.version == "1"
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        _sha256(pin.uri)
    assert anonymous.value.code == 401
    assert pin.sha256 == _sha256(pin.uri, guarded.credentials)


def test_credentials_a_registry_refuses_are_unauthorized_and_never_told(guarded: Server) -> None:
    password = str(guarded.password)
    wrong = Credentials(username=guarded.username, password=f"{password}-not")
    for credentials in (wrong, None, Credentials(token=password)):  # MLflow's basic auth takes no bearer token
        refused = _refused("models:/iris@champion", guarded, credentials)
        assert refused.reason == "RegistryUnauthorized"
        assert refused.message.startswith(
            f"HTTP 401 from {guarded.url}/api/2.0/mlflow/registered-models/alias: You are not authenticated."
        )
        assert password not in str(refused) and password not in repr(refused)


def test_the_registry_example_renders_for_compose_pinned_on_the_tracking_server(
    models: Models, server: Server, tmp_path: Path
) -> None:
    """``mlmodel compose render`` pins ``models:/iris@champion`` as the operator does: the Compose file has the
    version's file and digest, never the alias; ``docker compose config`` takes it (issue 27's acceptance 6 for the
    registry's example; ``test_compose.py`` renders the others)."""
    out = tmp_path / "compose.yaml"
    example = REPO / "manifests" / "examples" / "iris-mlflow.yaml"
    argv = ["compose", "render", str(example), "-o", str(out), "--mlflow-tracking-uri", server.url]
    assert cli.main(argv) == 0
    environment = yaml.safe_load(out.read_text())["services"]["iris-stable"]["environment"]
    pinned = _resolve("models:/iris@champion", server)
    assert (environment["MODEL_URI"], environment["MODEL_SHA256"]) == (pinned.uri, pinned.sha256)
    assert "champion" not in out.read_text()
    config = subprocess.run([str(DOCKER_COMPOSE), "-f", str(out), "config", "-q"], capture_output=True, text=True)
    assert config.returncode == 0, config.stderr
