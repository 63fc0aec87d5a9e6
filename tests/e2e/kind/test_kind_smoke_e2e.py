"""The smoke test on kind (``make test-kind-smoke``), the provider that does not run the full suite:
one ``kind create cluster``, ``helm install``, a two-variant ModelDeployment Ready with its split
seen through the entry Service, a wrong digest Degraded, and ``kind delete cluster`` leaving no
container, network, volume, mount or route behind. The same code runs on GitHub's kind.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from load import burst, shares, summary
from release import NAMESPACE, RELEASE, helm
from test_zz_cluster_down import host_leftovers

from conftest import (
    REPO,
    STATE,
    TEARDOWN_MARK,
    WRONG_DIGEST,
    Cluster,
    broken_model,
    deploy_model_store,
    is_true,
    wait_settled,
)

EXAMPLE = REPO / "manifests" / "examples" / "iris-canary.yaml"
NODE = "mlmodel-control-plane"  # kind's name for the control-plane node of cluster "mlmodel"
KIND_LABEL = "io.x-k8s.kind.cluster"


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=False).stdout.strip()


def test_kind_serves_the_example_split_and_refuses_a_wrong_digest(
    cluster: Cluster, operator: None, namespace: str, models: Path
) -> None:
    assert cluster.provider == "kind", f"this is the kind smoke test; the cluster is {cluster.provider!r}"
    assert NODE in _docker("ps", "--filter", f"label={KIND_LABEL}", "--format", "{{.Names}}").split()
    deployed = json.loads(helm(cluster, "status", RELEASE, "--namespace", NAMESPACE, "-o", "json").stdout)
    assert deployed["info"]["status"] == "deployed", deployed["info"]

    deploy_model_store(cluster, namespace, models)
    cluster.kubectl("-n", namespace, "apply", "-f", str(EXAMPLE))
    status = wait_settled(cluster, namespace)
    assert status["weights"] == "stable=90,canary=10", status
    with cluster.service_url(namespace, "iris", 80) as base:
        results = burst(base, 2000)
    assert all(r.status == 200 for r in results), summary(results)
    split = shares(results)
    assert abs(split["stable"] - 90) <= 3 and abs(split["canary"] - 10) <= 3, split

    cluster.apply(broken_model(namespace))
    degraded = cluster.wait_until(
        "broken to be Degraded", lambda: is_true(cluster, namespace, "broken", "Degraded"), 240
    )
    real = hashlib.sha256((models / "iris.joblib").read_bytes()).hexdigest()
    assert degraded["reason"] == "ModelLoadFailed", degraded
    assert WRONG_DIGEST in degraded["message"] and real in degraded["message"], degraded


@pytest.mark.tears_down_cluster
def test_kind_delete_leaves_no_container_network_volume_mount_or_route(cluster: Cluster) -> None:
    assert TEARDOWN_MARK == "tears_down_cluster"
    volumes = _docker("inspect", "--format", "{{range .Mounts}}{{.Name}} {{end}}", NODE).split()
    address = _docker("inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", NODE)
    assert volumes and address, "kind's node has no volume or address to check"
    assert any(f"via {address} " in r for r in _routes()), "the harness routed nothing to the node"
    down = subprocess.run(["make", "-C", str(REPO), "cluster-down"], capture_output=True, text=True, timeout=600)
    assert down.returncode == 0, f"make cluster-down failed:\n{down.stdout}\n{down.stderr}"
    assert not (STATE / "kubeconfig").exists(), "cluster-down left the kubeconfig"
    left = {
        "containers": _docker("ps", "-a", "--filter", f"label={KIND_LABEL}", "--format", "{{.Names}}").split(),
        "networks": _docker("network", "ls", "--filter", "name=^kind$", "--format", "{{.Name}}").split(),
        "volumes": [v for v in volumes if _docker("volume", "ls", "-q", "--filter", f"name={v}")],
        "mounts": [ln for ln in Path("/proc/self/mountinfo").read_text().splitlines() if any(v in ln for v in volumes)],
        "routes": [r for r in _routes() if f"via {address} " in r],
        **{k: v for k, v in host_leftovers().items() if v},
    }
    assert not any(left.values()), f"kind delete left: {left}\n--- cluster-down ---\n{down.stdout}{down.stderr}"


def _routes() -> list[str]:
    return subprocess.run(["ip", "route"], capture_output=True, text=True, check=False).stdout.splitlines()
