"""What the local cluster's teardown takes as its own: processes under its state directory, not those of another
cluster's state directory beside it (``.cluster-kind/``, or any ``MLMODEL_CLUSTER_DIR``)."""

from __future__ import annotations

from cluster.mlcluster import cleanup
from cluster.mlcluster.common import STATE


def test_a_daemon_under_the_state_directory_is_ours() -> None:
    assert cleanup._ours(["etcd", "--data-dir", f"{STATE}/etcd"])
    assert cleanup._ours(["kube-apiserver", f"--client-ca-file={STATE}/pki/ca.crt"])


def test_a_daemon_of_a_cluster_in_a_sibling_directory_is_not() -> None:
    assert not cleanup._ours(["etcd", "--data-dir", f"{STATE}-kind/etcd"])
    assert not cleanup._ours(["kube-apiserver", f"--client-ca-file={STATE}-kind/pki/ca.crt"])
