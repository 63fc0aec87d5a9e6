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
from mlmodel_testing.cluster import REPO, STATE, Cluster
from mlmodel_testing.host import TEARDOWN_MARK, host_leftovers
from mlmodel_testing.load import burst, shares, summary
from mlmodel_testing.models import CANARY_EXAMPLE, WRONG_DIGEST, broken_model, deploy_model_store
from mlmodel_testing.release import NAMESPACE, RELEASE, helm
from mlmodel_testing.status import is_true, wait_settled

LOCAL_STATE = REPO / ".cluster"  # the local cluster's state, which the e2e suite may be using meanwhile
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
    cluster.kubectl("-n", namespace, "apply", "-f", str(CANARY_EXAMPLE))
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
    node_id = _docker("inspect", "--format", "{{.Id}}", NODE)
    volumes = _docker("inspect", "--format", "{{range .Mounts}}{{.Name}} {{end}}", NODE).split()
    address = _docker("inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", NODE)
    assert volumes and address, "kind's node has no volume or address to check"
    assert len(_processes_in(node_id)) > 10, "no process is seen in kind's node: the check below would see none"
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
        "processes": _processes_in(node_id),
        **{k: v for k, v in _host_leftovers().items() if v},
    }
    assert not any(left.values()), f"kind delete left: {left}\n--- cluster-down ---\n{down.stdout}{down.stderr}"


def _processes_in(container: str) -> list[str]:
    """The host's processes in the container's cgroup: kind's node and everything it ran."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and container in (proc / "cgroup").read_text():
                argv = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
                found.append(f"{proc.name} {argv[:160].decode(errors='replace')}")
        except OSError:
            continue
    return found


def _host_leftovers() -> dict[str, list[str]]:
    """``host_leftovers``, less what the local cluster has on the host when it runs beside this one (``make
    test`` runs the e2e suite on it meanwhile): its processes, bridge, pod network namespaces, iptables chains
    and pod cgroups. Mounts under this cluster's state directory are this cluster's either way."""
    found = host_leftovers()
    if (LOCAL_STATE / "kubeconfig").exists():
        return {"mounts": [m for m in found["mounts"] if not m.startswith("/run/netns/")]}
    return found


def _routes() -> list[str]:
    return subprocess.run(["ip", "route"], capture_output=True, text=True, check=False).stdout.splitlines()
