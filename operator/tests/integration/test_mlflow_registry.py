"""ModelDeployments serving an MLflow registry's models, on a real API server with the operator in process and a
real MLflow tracking server on loopback (``mlmodel_testing.mlflow``), models put there with MLflow's own client: an
alias pinned to its version's file and digest in the Deployment and the status, followed when it moves (a new
revision under ``spec.rollout``), a failed lookup that keeps the pin, and the registry's refusals in ``Ready``. No pod
serves here: the servers downloading the pinned file, on real pods, are ``tests/e2e/test_mlflow_e2e.py``'s."""

from __future__ import annotations

import functools
import hashlib
import socket
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from mlmodel_operator import names
from mlmodel_testing import mlflow
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from conftest import Kubectl, eventually

POLL = "1"  # seconds between two lookups of an alias
X, Y = load_iris(return_X_y=True, as_frame=True)


def model(c: float) -> LogisticRegression:
    return LogisticRegression(C=c, max_iter=500).fit(X, Y)


def md(name: str, namespace: str, uri: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"variants": [{"name": "main", "modelUri": uri}], **spec},
    }


def server_env(kubectl: Kubectl, namespace: str, deployment: str) -> dict[str, Any]:
    found = kubectl.get("deployment", deployment, namespace)
    if found is None:
        return {}
    container = found["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def status(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    return (kubectl.get("modeldeployment", name, namespace) or {}).get("status") or {}


def ready(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    conditions = status(kubectl, namespace, name).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Ready"), {})


def sha256(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return hashlib.sha256(answer.read()).hexdigest()


@pytest.fixture
def tracking(tmp_path: Path) -> Iterator[mlflow.Server]:
    with mlflow.tracking_server(tmp_path / "mlflow") as server:
        yield server


def test_an_alias_is_pinned_followed_kept_through_a_failed_lookup_a_rollouts_revision_and_refusals_reach_ready(
    kubectl: Kubectl, namespace: str, operator: Callable[..., Any], tracking: mlflow.Server
) -> None:
    for c in (1.0, 0.5):
        mlflow.register(tracking.url, "iris", model(c), input_example=X.iloc[:2])
    client = MlflowClient(tracking.url)
    client.set_registered_model_alias("iris", "champion", "1")
    operator("--mlflow-tracking-uri", tracking.url, "--mlflow-poll-seconds", POLL)
    kubectl.apply(md("iris", namespace, "models:/iris@champion"))

    def pinned(version: str) -> dict[str, Any] | None:
        models = status(kubectl, namespace, "iris").get("models") or [{}]
        env = server_env(kubectl, namespace, "iris-main")
        found = models[0].get("version") == version and env.get(names.ENV_MODEL_URI) == models[0].get("artifactUri")
        return models[0] if found else None

    first = eventually(lambda: pinned("1"), "version 1 pinned in the status and the Deployment")
    assert status(kubectl, namespace, "iris")["model"] == "iris@champion → v1"
    env = server_env(kubectl, namespace, "iris-main")
    assert env[names.ENV_MODEL_SHA256] == first["sha256"] == sha256(first["artifactUri"])  # the file's own digest
    assert first["artifactUri"].startswith(f"{tracking.url}/api/2.0/mlflow-artifacts/artifacts/")
    assert '"name": "sepal length (cm)"' in env[names.ENV_INPUT_SCHEMA]  # the signature: the input contract
    # The alias moves: the next lookup pins version 2.
    client.set_registered_model_alias("iris", "champion", "2")
    second = eventually(lambda: pinned("2"), "version 2 pinned after the alias moved", deadline=30)
    assert second["sha256"] != first["sha256"] and second["sha256"] == sha256(second["artifactUri"])
    # The alias goes: the variant keeps version 2, and Ready says why in the registry's words.
    client.delete_registered_model_alias("iris", "champion")
    gone = eventually(lambda: ready(kubectl, namespace, "iris").get("reason") == "ModelNotFound", "ModelNotFound")
    assert gone
    message = ready(kubectl, namespace, "iris")["message"]
    assert "main: models:/iris@champion: Registered model alias champion not found" in message, message
    assert pinned("2") and server_env(kubectl, namespace, "iris-main")[names.ENV_MODEL_SHA256] == second["sha256"]
    # Refusals of ModelDeployments never resolved: Ready=False with the reason, and no Deployment.
    closed = f"http://127.0.0.1:{_closed_port()}"
    kubectl.apply(md("nope", namespace, "models:/nope/1"))
    kubectl.apply(md("away", namespace, "models:/iris/1", mlflow={"trackingUri": closed}))
    for name, reason, words in (
        ("nope", "ModelNotFound", "nope"),
        ("away", "RegistryUnreachable", closed),
    ):
        refused = eventually(functools.partial(_refused, kubectl, namespace, name, reason), f"{name}: {reason}")
        assert words in refused["message"], refused
        assert kubectl.get("deployment", f"{name}-main", namespace) is None
    # Under spec.rollout, a moved alias is a new revision, its Deployment on the new version's file.
    for c in (1.0, 0.5):
        mlflow.register(tracking.url, "forest", model(c))
    client.set_registered_model_alias("forest", "prod", "1")
    rollout = {"steps": [{"setWeight": 50}, {"pause": {}}]}
    kubectl.apply(md("forest", namespace, "models:/forest@prod", rollout=rollout))
    eventually(lambda: server_env(kubectl, namespace, "forest-r1"), "revision 1's Deployment")
    client.set_registered_model_alias("forest", "prod", "2")

    def revision_2() -> dict[str, Any] | None:
        revisions = status(kubectl, namespace, "forest").get("revisions") or []
        return next((r for r in revisions if r["revision"] == 2), None)

    made = eventually(revision_2, "revision 2 from the moved alias", deadline=30)
    # The status may name the revision a pass before its Deployment is applied.
    r2 = eventually(lambda: server_env(kubectl, namespace, "forest-r2"), "revision 2's Deployment")
    r1 = server_env(kubectl, namespace, "forest-r1")
    models = status(kubectl, namespace, "forest")["models"]
    assert r2[names.ENV_MODEL_SHA256] == made["modelSha256"] == models[0]["sha256"] != r1[names.ENV_MODEL_SHA256]
    assert status(kubectl, namespace, "forest")["model"] == "forest@prod → v2"


def test_credentials_from_the_mds_secret_sign_in_and_a_wrong_password_is_refused_without_showing_it(
    kubectl: Kubectl, namespace: str, operator: Callable[..., Any], tmp_path: Path
) -> None:
    with mlflow.tracking_server(tmp_path / "auth", basic_auth=True) as server:
        mlflow.register(server.url, "iris", model(1.0), alias="champion", credentials=server.credentials)
        operator("--mlflow-poll-seconds", POLL)
        wrong = "not-" + str(server.password)
        kubectl.apply(_secret(namespace, str(server.username), wrong))
        kubectl.apply(
            md(
                "iris",
                namespace,
                "models:/iris@champion",
                mlflow={"trackingUri": server.url, "credentialsSecret": {"name": "mlflow"}},
            )
        )
        eventually(lambda: ready(kubectl, namespace, "iris").get("reason") == "RegistryUnauthorized", "a refusal")
        everything = kubectl("-n", namespace, "get", "modeldeployment,events", "-o", "yaml").stdout
        assert wrong not in everything and "RegistryUnauthorized" in everything
        kubectl.apply(_secret(namespace, str(server.username), str(server.password)))
        env = eventually(lambda: server_env(kubectl, namespace, "iris-main"), "the Deployment, signed in", deadline=30)
        assert env["MLFLOW_TRACKING_PASSWORD"] == {
            "secretKeyRef": {"name": "mlflow", "key": "password", "optional": True}
        }
        assert (
            str(server.password)
            not in kubectl("-n", namespace, "get", "modeldeployment,deployment,events", "-o", "yaml").stdout
        )


def _secret(namespace: str, username: str, password: str) -> dict[str, Any]:
    data = {"username": username, "password": password}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "mlflow", "namespace": namespace},
        "stringData": data,
    }


def _refused(kubectl: Kubectl, namespace: str, name: str, reason: str) -> dict[str, Any] | None:
    condition = ready(kubectl, namespace, name)
    return condition if condition.get("reason") == reason else None


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
