"""The e2e tests' operator, and ``make demo``'s: the Helm release ``mlmodel`` of ``charts/mlmodel`` in
``mlmodel-system``, with the images ``make images`` loads. One operator runs in the cluster; every test shares it.

The images keep their tags when rebuilt, so the operator's pods carry the operator image's ID as an annotation:
an upgrade rolls them exactly when that image changed, and leaves them alone otherwise."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

from mlmodel_operator import names

from mlmodel_testing.cluster import REPO, Cluster, run

HELM = REPO / ".venv" / "bin" / "helm"
CHART = REPO / "charts" / "mlmodel"
RELEASE = "mlmodel"
NAMESPACE = "mlmodel-system"
OPERATOR = "mlmodel-operator"  # its Deployment and ServiceAccount
CRD = "modeldeployments.mlmodel.io"
OPERATOR_IMAGE = "mlmodel-operator:0.1.0"
# The chart's default images are those `make images` builds and loads (`mlmodel-operator`, `mlmodel-server` and
# `mlmodel-router` at the chart's appVersion), so `make demo` installs with no value at all (`values=[]`). The idle
# test watches several resync rounds go by: 10 s each here, not the default 300 s.
# Less CPU than the built-in 100m and 50m, through the chart's serverResources and routerResources (on real pods:
# test_router_e2e checks them): two test files at once then leave room on the 2-CPU test node's 2,000m.
SERVER_RESOURCES = {"requests": {"cpu": "20m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
ROUTER_RESOURCES = {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}}
VALUES = [
    *("--set", "resyncSeconds=10"),
    *("--set-json", f"serverResources={json.dumps(SERVER_RESOURCES)}"),
    *("--set-json", f"routerResources={json.dumps(ROUTER_RESOURCES)}"),
]
# The namespace refuses, and warns about, any pod that is not restricted.
RESTRICTED = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")}


def helm(cluster: Cluster, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    if not HELM.exists():
        raise AssertionError(f"{HELM} is missing: run `make install`")
    return run([str(HELM), "--kubeconfig", str(cluster.kubeconfig), *args], check=check, timeout=timeout)


def restricted_namespace(cluster: Cluster, name: str) -> None:
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": RESTRICTED}})


def operator_image_id() -> list[str]:
    """Helm values that annotate the operator's pods with its image's ID, when docker has that image."""
    if shutil.which("docker") is None:
        return []
    found = run(["docker", "image", "inspect", "--format", "{{.Id}}", OPERATOR_IMAGE], check=False)
    image_id = found.stdout.strip() if found.returncode == 0 else ""
    return ["--set-string", f"podAnnotations.mlmodel\\.io/image-id={image_id}"] if image_id else []


def install(cluster: Cluster, *extra: str, values: Sequence[str] = VALUES) -> subprocess.CompletedProcess[str]:
    """``helm upgrade --install`` of the release (idempotent), and wait for the operator."""
    restricted_namespace(cluster, NAMESPACE)
    _adopt_unmanaged(cluster)
    return helm(
        cluster,
        "upgrade",
        "--install",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--wait",
        "--timeout",
        "5m",
        *values,
        *operator_image_id(),
        *extra,
    )


def _owned(obj: dict[str, Any]) -> bool:
    return (obj["metadata"].get("annotations") or {}).get("meta.helm.sh/release-name") == RELEASE


def _adopt_unmanaged(cluster: Cluster) -> None:
    """Clusters set up before the chart have the operator from plain manifests: Helm refuses to
    take over objects it did not make. The operator's are replaced; the CRD, which holds every
    ModelDeployment, is adopted in place (Helm's labels and annotations)."""
    for kind, namespace in (
        ("deployment", NAMESPACE),
        ("serviceaccount", NAMESPACE),
        ("clusterrole", None),
        ("clusterrolebinding", None),
    ):
        scope = ["-n", namespace] if namespace else []
        found = cluster.kubectl(*scope, "get", kind, OPERATOR, "-o", "json", check=False)
        if found.returncode == 0 and not _owned(json.loads(found.stdout)):
            cluster.kubectl(*scope, "delete", kind, OPERATOR, "--wait=true")
    found = cluster.kubectl("get", "crd", CRD, "-o", "json", check=False)
    if found.returncode == 0 and not _owned(json.loads(found.stdout)):
        cluster.kubectl("label", "--overwrite", "crd", CRD, "app.kubernetes.io/managed-by=Helm")
        cluster.kubectl(
            "annotate",
            "--overwrite",
            "crd",
            CRD,
            f"meta.helm.sh/release-name={RELEASE}",
            f"meta.helm.sh/release-namespace={NAMESPACE}",
        )


def operator_pods(cluster: Cluster) -> list[dict[str, Any]]:
    """The operator's pods that are not on their way out."""
    found = cluster.get("pods", namespace=NAMESPACE, selector=f"{names.LABEL_COMPONENT}=operator")
    return [p for p in found["items"] if not p["metadata"].get("deletionTimestamp")]


def leader_pod(cluster: Cluster) -> str | None:
    """The operator pod that holds the leader-election Lease (its identity is ``<pod>_<suffix>``), if it runs."""
    lease = cluster.get("leases", OPERATOR, namespace=NAMESPACE, missing_ok=True)
    pod = ((lease or {}).get("spec", {}).get("holderIdentity") or "").rpartition("_")[0]
    found = cluster.get("pods", pod, namespace=NAMESPACE, missing_ok=True) if pod else None
    if found is None:
        return None
    running = found["status"].get("phase") == "Running" and not found["metadata"].get("deletionTimestamp")
    return str(found["metadata"]["name"]) if running else None


def leader_metrics(cluster: Cluster) -> str:
    """The leader's /metrics, through the API server's pod proxy (a standby serves none)."""
    pod = leader_pod(cluster)
    if pod is None:
        return ""
    return cluster.kubectl("get", "--raw", f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}:9090/proxy/metrics").stdout


def leader_log(cluster: Cluster, namespace: str, lines: int = 200) -> str:
    """The last ``lines`` of the leader's log that name ``namespace`` (kopf's records name each object's), for a
    failed test's dump; what kubectl said if there is none."""
    pod = leader_pod(cluster)
    if pod is None:
        return "(no leader runs)"
    found = cluster.kubectl("-n", NAMESPACE, "logs", pod, "--timestamps", check=False)
    about = [line for line in found.stdout.splitlines() if namespace in line]
    return "\n".join(about[-lines:]) or f"(no line of {pod}'s log names {namespace}) {found.stderr}"
