"""The model server as a plain Deployment + Service on the test cluster.

Checks that the pod (restricted security context, read-only root filesystem) becomes Ready,
that ``POST /predict`` answers from this host through the Service, and that it answers from
another pod through the Service's DNS name ``<svc>.<ns>.svc.cluster.local``.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
from typing import Any

import pytest
from mlmodel_testing.cluster import REPO, Cluster
from mlmodel_testing.pods import RESTRICTED_CONTAINER, RESTRICTED_POD, client_pod, client_result, post_predict

APP = "iris-server"


@pytest.fixture(scope="module")
def iris_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, str]:
    """The iris model from server/examples/train_models.py, and its sha256."""
    script = REPO / "server" / "examples" / "train_models.py"
    assert script.exists(), f"{script} is missing"
    out = tmp_path_factory.mktemp("models")
    venv_python = REPO / ".venv" / "bin" / "python"
    python = str(venv_python) if venv_python.exists() else sys.executable
    p = subprocess.run(
        [python, str(script), "--out", str(out), "--only", "iris"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert p.returncode == 0, f"train_models.py failed:\n{p.stdout}\n{p.stderr}"
    data = (out / "iris.joblib").read_bytes()
    return data, hashlib.sha256(data).hexdigest()


def server_manifests(namespace: str, image: str, model: bytes, sha256: str) -> list[dict[str, Any]]:
    labels = {"app": APP}
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "iris-model", "namespace": namespace},
            "binaryData": {"iris.joblib": base64.b64encode(model).decode()},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": APP, "namespace": namespace, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "automountServiceAccountToken": False,
                        "securityContext": RESTRICTED_POD,
                        "containers": [
                            {
                                "name": "server",
                                "image": image,
                                "imagePullPolicy": "IfNotPresent",
                                "env": [
                                    {
                                        "name": "MODEL_URI",
                                        "value": "file:///models/iris.joblib",
                                    },
                                    {"name": "MODEL_SHA256", "value": sha256},
                                    {"name": "MODEL_NAME", "value": "iris"},
                                    {"name": "PORT", "value": "8080"},
                                ],
                                "ports": [{"name": "http", "containerPort": 8080}],
                                "readinessProbe": {
                                    "httpGet": {"path": "/readyz", "port": "http"},
                                    "periodSeconds": 2,
                                    "failureThreshold": 2,
                                },
                                "livenessProbe": {
                                    "httpGet": {"path": "/healthz", "port": "http"},
                                    "periodSeconds": 10,
                                    "failureThreshold": 6,
                                },
                                "resources": {
                                    "requests": {"cpu": "100m", "memory": "128Mi"},
                                    "limits": {"memory": "1Gi"},
                                },
                                "securityContext": RESTRICTED_CONTAINER,
                                "volumeMounts": [
                                    {
                                        "name": "models",
                                        "mountPath": "/models",
                                        "readOnly": True,
                                    },
                                    {"name": "tmp", "mountPath": "/tmp"},
                                ],
                            }
                        ],
                        "volumes": [
                            {"name": "models", "configMap": {"name": "iris-model"}},
                            {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": APP, "namespace": namespace, "labels": labels},
            "spec": {
                "selector": labels,
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
            },
        },
    ]


def pod_ready(cluster: Cluster, namespace: str) -> bool:
    pods = cluster.get("pods", namespace=namespace, selector=f"app={APP}")["items"]
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for p in pods
        for c in p.get("status", {}).get("conditions", [])
    )


def test_server_deployment_serves_predictions(
    cluster: Cluster, namespace: str, server_image: str, iris_model: tuple[bytes, str]
) -> None:
    model, sha256 = iris_model
    cluster.apply(server_manifests(namespace, server_image, model, sha256))

    cluster.wait_until(
        "the server pod to be Ready",
        lambda: pod_ready(cluster, namespace),
        240,
        interval=2,
    )

    # From this host, through the Service.
    with cluster.service_url(namespace, APP, 80) as base:
        result = cluster.wait_until("POST /predict through the Service", lambda: post_predict(base), 60)
    assert result["predictions"] == [0], result

    # From another pod, through the Service's DNS name.
    url = f"http://{APP}.{namespace}.svc.cluster.local/predict"
    cluster.apply(client_pod(namespace, server_image, url))

    in_cluster = cluster.wait_until("the in-cluster client pod", lambda: client_result(cluster, namespace), 180, 2)
    assert in_cluster["predictions"] == [0], in_cluster
