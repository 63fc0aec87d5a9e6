"""`make cluster-down` stops the cluster and leaves nothing behind on the host.

This test tears the cluster down, so it is ordered last (marker ``tears_down_cluster``). What is left is
looked at independently of the harness's own bookkeeping (``mlmodel_testing.host.host_leftovers``).
"""

from __future__ import annotations

import subprocess

import pytest
from mlmodel_testing.cluster import REPO, STATE, Cluster
from mlmodel_testing.host import TEARDOWN_MARK, host_leftovers, sh


@pytest.mark.tears_down_cluster
def test_cluster_down_leaves_nothing_behind(cluster: Cluster) -> None:
    assert TEARDOWN_MARK == "tears_down_cluster"
    p = subprocess.run(
        ["make", "-C", str(REPO), "cluster-down"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert p.returncode == 0, f"make cluster-down failed:\n{p.stdout}\n{p.stderr}"
    assert not (STATE / "kubeconfig").exists(), "cluster-down left the kubeconfig"
    if cluster.provider == "kind":
        nodes = sh(["docker", "ps", "-a", "--filter", "label=io.x-k8s.kind.cluster=mlmodel", "--format", "{{.Names}}"])
        assert not nodes.split(), nodes
    left = {k: v for k, v in host_leftovers().items() if v}
    assert not left, f"cluster-down left things behind: {left}\n--- cluster-down output ---\n{p.stdout}{p.stderr}"
