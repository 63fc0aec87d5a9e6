"""Pinned versions of everything the local provider runs, and why these.

Kubernetes v1.34.4
    * This machine (and CI) has cgroup v1 only. Kubernetes 1.35 turned the kubelet's
      ``failCgroupV1`` on by default, so 1.35+ kubelets refuse to start here without an explicit
      opt-out that is itself slated for removal. 1.34 is the newest minor whose kubelet still
      runs on cgroup v1 by default (it logs a deprecation warning; we also set
      ``failCgroupV1: false`` explicitly).
    * v1.34.4 rather than a later 1.34 patch: it is the newest 1.34 patch whose module checksum
      is in the Go checksum database (sum.golang.org answered 404 for v1.34.12 when this was
      pinned), so ``go build`` from the module proxy works with checksum verification on.
    * The kubelet talks CRI v1, which Debian bookworm's containerd 1.6.20 serves. containerd 1.6
      does not implement the ``RuntimeConfig`` CRI call, so the kubelet falls back to the
      cgroup driver in its config (``cgroupfs``, which must match containerd's
      ``SystemdCgroup = false``); 1.34 still allows that fallback.
etcd v3.6.4
    Built from go.etcd.io/etcd/server/v3: the version Kubernetes 1.34 is released and tested
    with (its etcd client is 3.6.4 as well). Debian's etcd 3.4.23 is older than the 3.5.x floor
    that current apiservers expect for consistent reads from the watch cache.
CoreDNS v1.12.3
    Built from github.com/coredns/coredns as a library with the handful of plugins a cluster
    needs (the full plugin set pulls in every cloud SDK and doubles the build time); 1.12 is
    the line Kubernetes 1.34 ships.
"""

from __future__ import annotations

import re
from pathlib import Path

KUBERNETES = "v1.34.4"
ETCD = "v3.6.4"
COREDNS = "v1.12.3"
COREDNS_PLUGINS = 2  # the plugin set's revision in build-go-bins.sh (2: metrics, for kubeadm's Corefile on kind)

# Images built locally (nothing can be pulled from a registry here).
BASE_IMAGE = "mlmodel-base:bookworm"
PAUSE_IMAGE = "mlmodel-pause:0.1"
COREDNS_IMAGE = f"mlmodel-coredns:{COREDNS.lstrip('v')}"
APP_VERSION = "0.1.0"
SERVER_IMAGE = f"mlmodel-server:{APP_VERSION}"
OPERATOR_IMAGE = f"mlmodel-operator:{APP_VERSION}"
ROUTER_IMAGE = f"mlmodel-router:{APP_VERSION}"
# The tracking server of the registry tests and the demo: the version of the client requirements-dev.txt pins.
_DEV = (Path(__file__).resolve().parents[3] / "requirements-dev.txt").read_text()
MLFLOW = re.search(r"^mlflow-skinny==(\S+)$", _DEV, re.MULTILINE)[1]  # type: ignore[index]
MLFLOW_IMAGE = f"mlmodel-mlflow:{MLFLOW}"
# Prometheus: the module version hack/tools.py builds (v0.3XX.Y is Prometheus 3.XX.Y), and the image of it that
# `mlmodel compose render --with-prometheus --prometheus-image` runs in the Compose tests and demo.
PROMETHEUS = "v0.313.5"
PROMETHEUS_IMAGE = "mlmodel-prometheus:3.13.5"

# kind: a node image works only with the kind release that built it, and kind builds a few patches of each
# minor. This is the 1.34 one of kind v0.33.0 (the kind that .github/workflows/ci.yml installs), pinned by
# digest as kind's release notes ask; `auto` uses kind only when this image is present locally.
KIND_NODE_IMAGE = "kindest/node:v1.34.11@sha256:44e222ee2132dab25ff87301682f89eb82c7880ea3a1bf543bfe9708fd08d67d"

# kind built here (make kind-node-image, kindimage.py): kind v0.30 is the release made for Kubernetes 1.34;
# crictl follows the Kubernetes minor.
# The local cluster's NetworkPolicy enforcement: kube-router's firewall alone (iptables and ipsets), run on the
# node beside kube-proxy. Not sigs.k8s.io/kube-network-policies (kind's agent): it hands each new connection to
# user space with nftables' `queue` statement, which this machine's kernel lacks (CONFIG_NFT_QUEUE is unset:
# `nft add rule ... queue num 100` answers "No such file or directory"). v2.1.0 is the only kube-router the module
# proxy serves here; the flaws reported against it do not matter on a throwaway cluster with no outside network.
KUBE_ROUTER = "v2.1.0"
KIND = "v0.30.0"
CRICTL = "v1.34.0"
KIND_LOCAL_NODE_IMAGE = f"mlmodel/kind-node:{KUBERNETES}"

K8S_BINARIES = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kubectl",
)
