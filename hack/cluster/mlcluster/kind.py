"""The ``kind`` provider (Kubernetes in Docker) and the ``existing`` provider."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from . import binaries, versions
from .common import KUBECONFIG, STATE, ClusterError, log, ok, output, run, step, which

CLUSTER_NAME = os.environ.get("MLMODEL_KIND_NAME", "mlmodel")


def node_image() -> str:
    return os.environ.get("MLMODEL_KIND_NODE_IMAGE", versions.KIND_NODE_IMAGE)


def available() -> tuple[bool, str]:
    """Whether kind can be used: kind and docker work and the node image is present locally.

    The node image is not pulled here: ``auto`` must not depend on a registry (this machine has
    none); set MLMODEL_CLUSTER=kind to let kind pull it.
    """
    from .images import docker

    if which("kind") is None:
        return False, "no `kind` on PATH"
    if not ok([docker(), "info"], timeout=20):
        return False, "docker is not running"
    if not ok([docker(), "image", "inspect", node_image()]):
        return False, f"kind node image {node_image()} is not present locally"
    return True, "kind and its node image are present"


def _kubectl(*args: str) -> str:
    return output([binaries.kubectl_path(), "--kubeconfig", KUBECONFIG, *args], timeout=300)


def _pod_route() -> list[str]:
    """The host's route to the pods: the node's pod CIDR via the node's address on Docker's network.

    With it, pod IPs answer from the host as on the local provider, where the host is the node (the
    monitoring e2e test's Prometheus runs on the host and scrapes pods).
    """
    from .images import docker

    node = f"{CLUSTER_NAME}-control-plane"
    cidr = _kubectl("get", "node", node, "-o", "jsonpath={.spec.podCIDR}")
    networks = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
    address = output([docker(), "inspect", "--format", networks, node])
    return [cidr, "via", address]


def up() -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    clusters = output(["kind", "get", "clusters"], check=False).split()
    if CLUSTER_NAME in clusters:
        log(f"kind cluster {CLUSTER_NAME} exists; reusing it")
        KUBECONFIG.write_text(output(["kind", "get", "kubeconfig", "--name", CLUSTER_NAME]) + "\n")
    else:
        with step(f"kind create cluster {CLUSTER_NAME} ({node_image()})"):
            run(
                [
                    "kind",
                    "create",
                    "cluster",
                    "--name",
                    CLUSTER_NAME,
                    "--image",
                    node_image(),
                    "--kubeconfig",
                    str(KUBECONFIG),
                    "--wait",
                    "180s",
                ]
            )
    KUBECONFIG.chmod(0o600)
    with step("wait for nodes to be Ready"):
        _kubectl("wait", "--for=condition=Ready", "node", "--all", "--timeout=180s")
    route = _pod_route()
    with step(f"ip route replace {' '.join(route)} (the pods, from the host)"):
        run(["ip", "route", "replace", *route])


def down() -> None:
    if which("kind") and CLUSTER_NAME in output(["kind", "get", "clusters"], check=False).split():
        if KUBECONFIG.exists():
            with contextlib.suppress(ClusterError):  # a node that cannot say: no route to take back
                run(["ip", "route", "del", *_pod_route()], check=False, quiet=True)
        with step(f"kind delete cluster {CLUSTER_NAME}"):
            run(["kind", "delete", "cluster", "--name", CLUSTER_NAME])


def load_image(image: str) -> None:
    with step(f"kind load docker-image {image}"):
        run(["kind", "load", "docker-image", "--name", CLUSTER_NAME, image])


def existing_up() -> None:
    """Use the current kubeconfig as is (copied, flattened, to .cluster/kubeconfig)."""
    src = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    if Path(src).resolve() == KUBECONFIG.resolve():
        raise ClusterError("MLMODEL_CLUSTER=existing needs KUBECONFIG pointing at another cluster's config")
    kubectl = binaries.kubectl_path()
    env = {"KUBECONFIG": src}
    if not ok(
        [
            kubectl,
            "--kubeconfig",
            src,
            "--request-timeout=10s",
            "get",
            "--raw",
            "/readyz",
        ]
    ):
        raise ClusterError(f"MLMODEL_CLUSTER=existing: the cluster in {src} does not answer")
    STATE.mkdir(parents=True, exist_ok=True)
    flat = output([kubectl, "config", "view", "--raw", "--minify", "--flatten"], env=env)
    KUBECONFIG.write_text(flat + "\n")
    KUBECONFIG.chmod(0o600)
    log(f"using the existing cluster from {src}")
