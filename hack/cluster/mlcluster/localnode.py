"""The local provider's node: its name, its bridge and its daemons, shared by ``local`` (which runs
them) and ``cleanup`` (which tears them down)."""

from __future__ import annotations

from .common import Daemon

NODE = "mlmodel-node"
BRIDGE = "mlbr0"

ETCD = Daemon("etcd")
APISERVER = Daemon("kube-apiserver")
CONTROLLER_MANAGER = Daemon("kube-controller-manager")
SCHEDULER = Daemon("kube-scheduler")
CONTAINERD = Daemon("containerd")
KUBELET = Daemon("kubelet")
KUBE_PROXY = Daemon("kube-proxy")
KUBE_ROUTER = Daemon("kube-router")  # NetworkPolicies: its firewall only
# Stop order for `down` (reverse of start).
ALL_DAEMONS = (
    KUBELET,
    KUBE_ROUTER,
    KUBE_PROXY,
    SCHEDULER,
    CONTAINERD,
    CONTROLLER_MANAGER,
    APISERVER,
    ETCD,
)
