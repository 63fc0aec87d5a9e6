"""The ``kind`` provider: Kubernetes in Docker, with the kind CLI and node image built here (or upstream's)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from . import binaries, versions
from .common import KUBECONFIG, STATE, ClusterError, log, ok, output, run, step, which
from .docker import HELD_CAPS, docker, ensure_docker
from .kindimage import COREDNS_TAG, ETCD_TAG, POD_SUBNET, SERVICE_SUBNET, build_node_image

CLUSTER_NAME = os.environ.get("MLMODEL_KIND_NAME", "mlmodel")
# This host has cgroup v1 only: the 1.34 kubelet runs on it when told to (see versions.py).
CONFIG = f"""\
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  podSubnet: {POD_SUBNET}
  serviceSubnet: {SERVICE_SUBNET}
kubeadmConfigPatches:
- |
  kind: KubeletConfiguration
  failCgroupV1: false
"""
# The node image built here carries the etcd and CoreDNS the harness builds, tagged as what they are.
LOCAL_IMAGE_TAGS = f"""\
- |
  kind: ClusterConfiguration
  etcd:
    local:
      imageTag: {ETCD_TAG}
  dns:
    imageTag: {COREDNS_TAG}
"""


def kind_bin() -> str:
    """The kind CLI on PATH (GitHub's runners install it), else the pinned one built here."""
    found = which("kind")
    if found:
        return found
    return str(binaries.ensure_go_tool("kind", versions.KIND, ("kind",)) / "kind")


def node_image() -> str:
    """MLMODEL_KIND_NODE_IMAGE; else, with a kind on PATH (GitHub's), the upstream node image of its release;
    else, with the kind built here, the node image built here (``make kind-node-image``)."""
    chosen = os.environ.get("MLMODEL_KIND_NODE_IMAGE")
    if chosen:
        return chosen
    return versions.KIND_NODE_IMAGE if which("kind") else versions.KIND_LOCAL_NODE_IMAGE


def available() -> tuple[bool, str]:
    """Whether kind can be used: docker works and a node image is present locally.

    The node image is not pulled here: ``auto`` must not depend on a registry (this machine has
    none); set MLMODEL_CLUSTER=kind to let kind pull it.
    """
    if not ok([docker(), "info"], timeout=20):
        return False, "docker is not running"
    if not ok([docker(), "image", "inspect", node_image()]):
        return False, f"kind node image {node_image()} is not present locally (make kind-node-image builds one)"
    return True, "kind and its node image are present"


def _kubectl(*args: str) -> str:
    return output([binaries.kubectl_path(), "--kubeconfig", KUBECONFIG, *args], timeout=300)


def _routes() -> list[list[str]]:
    """The host's routes into the cluster, via the node's address on Docker's network: the node's pod
    CIDR, and the Service CIDR (kube-proxy on the node forwards a ClusterIP).

    With them, pod and Service IPs answer from the host as on the local provider, where the host is
    the node: the monitoring test's Prometheus on the host scrapes pods, and the tests reach a
    Service through its ClusterIP. (``kubectl port-forward`` would pin one pod of the Service, and the
    router's pods roll on every weight change.)
    """
    node = f"{CLUSTER_NAME}-control-plane"
    cidr = _kubectl("get", "node", node, "-o", "jsonpath={.spec.podCIDR}")
    networks = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
    address = output([docker(), "inspect", "--format", networks, node])
    return [[cidr, "via", address], [SERVICE_SUBNET, "via", address]]


def _exists(kind: str) -> bool:
    return CLUSTER_NAME in output([kind, "get", "clusters"], check=False).split()


def _check_runtime() -> None:
    """kind's nodes are privileged: where this host lacks a capability, dockerd must run them through
    ``hack/cluster/runc-held-caps`` (the harness starts dockerd so)."""
    ensure_docker()
    status = Path("/proc/self/status").read_text()
    bounding = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("CapBnd:")), 16)
    every = (1 << (int(Path("/proc/sys/kernel/cap_last_cap").read_text()) + 1)) - 1
    runtime = output([docker(), "info", "--format", "{{.DefaultRuntime}}"])
    if bounding & every != every and runtime != HELD_CAPS:
        raise ClusterError(
            f"this host's capability bounding set is {bounding:#x}, not all, and dockerd's default runtime is "
            f"{runtime!r}: privileged containers fail. Stop that dockerd; the harness then starts its own "
            f"with the {HELD_CAPS} runtime"
        )


def _up() -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    _check_runtime()
    kind = kind_bin()
    if _exists(kind):
        log(f"kind cluster {CLUSTER_NAME} exists; reusing it")
        KUBECONFIG.write_text(output([kind, "get", "kubeconfig", "--name", CLUSTER_NAME]) + "\n")
    else:
        config = STATE / "kind.yaml"
        image = node_image()
        built_here = image == versions.KIND_LOCAL_NODE_IMAGE
        if built_here:
            build_node_image()  # a second or two when nothing changed
        config.write_text(CONFIG + (LOCAL_IMAGE_TAGS if built_here else ""))
        with step(f"kind create cluster {CLUSTER_NAME} ({image})"):
            create = [kind, "create", "cluster", "--name", CLUSTER_NAME, "--image", image, "--config", str(config)]
            run([*create, "--kubeconfig", str(KUBECONFIG), "--wait", "180s"])
    KUBECONFIG.chmod(0o600)
    with step("wait for nodes to be Ready, with their pod CIDR"):
        _kubectl("wait", "--for=condition=Ready", "node", "--all", "--timeout=180s")
        _kubectl("wait", "--for=jsonpath={.spec.podCIDR}", "node", "--all", "--timeout=60s")
    for route in _routes():
        with step(f"ip route replace {' '.join(route)} (from the host)"):
            run(["ip", "route", "replace", *route])


def _down() -> None:
    kind = kind_bin()
    if _exists(kind):
        if KUBECONFIG.exists():
            with contextlib.suppress(ClusterError):  # a node that cannot say: no route to take back
                for route in _routes():
                    run(["ip", "route", "del", *route], check=False, quiet=True)
        with step(f"kind delete cluster {CLUSTER_NAME}"):
            run([kind, "delete", "cluster", "--name", CLUSTER_NAME])
    _remove_network()


def _remove_network() -> None:
    """kind's Docker network, which ``kind delete`` keeps for the next cluster: removed once no container is on it."""
    attached = run([docker(), "network", "inspect", "kind", "--format", "{{len .Containers}}"], check=False, quiet=True)
    if attached.returncode == 0 and attached.stdout.decode().strip() == "0":
        with step("docker network rm kind"):
            run([docker(), "network", "rm", "kind"], quiet=True)


class Kind:
    """The kind provider (``provider.Provider``)."""

    name = "kind"

    def up(self, control_plane_only: bool = False) -> None:
        if control_plane_only:
            raise ClusterError("--control-plane-only is the local provider's")
        _up()

    def down(self) -> None:
        _down()

    def can_load(self) -> bool:
        return _exists(kind_bin())

    def load_image(self, image: str) -> None:
        with step(f"kind load docker-image {image}"):
            run([kind_bin(), "load", "docker-image", "--name", CLUSTER_NAME, image])
