"""The operator in the cluster: a ModelDeployment with a canary becomes Ready and serves
predictions through its entry Service, from this host and from another pod; a model with the
wrong digest never becomes Ready and says why."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_server_deployment import IRIS_ROW, client_pod

from conftest import REPO, Cluster

CRD = REPO / "crds" / "modeldeployments.mlmodel.io.yaml"
OPERATOR = REPO / "manifests" / "operator" / "operator.yaml"
EXAMPLES = REPO / "manifests" / "examples"
WRONG = "0" * 64


@pytest.fixture(scope="module")
def operator(cluster: Cluster, server_image: str) -> Iterator[None]:
    """The CRD and the operator (images from ``make images``, which the server_image fixture ran)."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/modeldeployments.mlmodel.io")
    cluster.kubectl("apply", "-f", str(OPERATOR))
    cluster.kubectl("-n", "mlmodel-system", "rollout", "restart", "deployment/mlmodel-operator")
    cluster.kubectl(
        "-n", "mlmodel-system", "rollout", "status", "deployment/mlmodel-operator", "--timeout=240s", timeout=300
    )
    yield
    cluster.kubectl("delete", "-f", str(OPERATOR), "--wait=false", check=False)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models")
    python = REPO / ".venv" / "bin" / "python"
    subprocess.run(
        [
            str(python) if python.exists() else sys.executable,
            str(REPO / "server/examples/train_models.py"),
            "--out",
            str(out),
            "--only",
            "iris",
            "--only",
            "iris-v2",
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


def condition(cluster: Cluster, namespace: str, name: str, kind: str) -> dict[str, Any] | None:
    md = cluster.kubectl_json("-n", namespace, "get", "modeldeployment", name)
    return next((c for c in (md.get("status") or {}).get("conditions") or [] if c["type"] == kind), None)


def is_true(cluster: Cluster, namespace: str, name: str, kind: str) -> dict[str, Any] | None:
    found = condition(cluster, namespace, name, kind)
    return found if found and found["status"] == "True" else None


def predict(base: str) -> tuple[dict[str, Any], str]:
    request = urllib.request.Request(
        f"{base}/predict",
        data=json.dumps({"instances": [IRIS_ROW]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read()), reply.headers["X-Model-Variant"]


def test_canary_serves_and_a_bad_model_is_degraded(
    cluster: Cluster, namespace: str, operator: None, models: Path, server_image: str
) -> None:
    cluster.kubectl(
        "-n",
        namespace,
        "create",
        "configmap",
        "example-models",
        f"--from-file={models / 'iris.joblib'}",
        f"--from-file={models / 'iris-v2.joblib'}",
    )
    cluster.kubectl("-n", namespace, "apply", "-f", str(EXAMPLES / "model-store.yaml"))
    cluster.kubectl("-n", namespace, "apply", "-f", str(EXAMPLES / "iris-canary.yaml"))

    ready = cluster.wait_until(
        "iris to be Ready", lambda: is_true(cluster, namespace, "iris", "Ready"), 300, interval=2
    )
    assert ready["reason"] == "AllVariantsReady"
    table = cluster.kubectl("-n", namespace, "get", "modeldeployments").stdout
    assert "stable=90,canary=10" in table and "2/2" in table, table

    # From this host, through the entry Service (all of it to stable until the router exists),
    # and through the canary's own Service.
    with cluster.service_url(namespace, "iris", 80) as base:
        body, variant = cluster.wait_until("a prediction through iris", lambda: predict(base), 60)
    assert body["predictions"] == [0] and variant == "stable"
    with cluster.service_url(namespace, "iris-canary", 80) as base:
        body, variant = cluster.wait_until("a prediction through iris-canary", lambda: predict(base), 60)
    assert body["predictions"] == [0] and variant == "canary"

    # From another pod, by DNS name.
    cluster.apply(client_pod(namespace, server_image, f"http://iris.{namespace}.svc.cluster.local/predict"))

    def client_result() -> dict[str, Any] | None:
        phase = cluster.kubectl("-n", namespace, "get", "pod", "dns-client", "-o", "jsonpath={.status.phase}").stdout
        logs = cluster.kubectl("-n", namespace, "logs", "dns-client", check=False).stdout
        assert phase != "Failed", f"client pod failed:\n{logs}"
        line = next((ln for ln in logs.splitlines() if ln.startswith("RESULT ")), None)
        return json.loads(line.removeprefix("RESULT ")) if phase == "Succeeded" and line else None

    assert cluster.wait_until("the in-cluster client", client_result, 180, interval=2)["predictions"] == [0]

    # A model whose digest does not match: Degraded, with both digests, and never Ready.
    broken = {
        "apiVersion": "mlmodel.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "broken", "namespace": namespace},
        "spec": {"variants": [{"name": "v1", "modelUri": "http://model-store/iris.joblib", "modelSha256": WRONG}]},
    }
    cluster.apply(broken)
    degraded = cluster.wait_until(
        "broken to be Degraded", lambda: is_true(cluster, namespace, "broken", "Degraded"), 240, interval=2
    )
    real = hashlib.sha256((models / "iris.joblib").read_bytes()).hexdigest()
    assert degraded["reason"] == "ModelLoadFailed", degraded
    assert WRONG in degraded["message"] and real in degraded["message"], degraded
    ready_condition = condition(cluster, namespace, "broken", "Ready")
    assert ready_condition is not None and ready_condition["status"] == "False"
    assert ready_condition["reason"] == "ModelLoadFailed"
