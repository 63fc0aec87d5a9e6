"""The ``existing`` provider: a cluster someone else runs, reached through the current kubeconfig."""

from __future__ import annotations

import os
from pathlib import Path

from . import binaries
from .common import KUBECONFIG, STATE, ClusterError, log, ok, output


class Existing:
    """The existing provider (``provider.Provider``): it neither starts nor stops the cluster."""

    name = "existing"

    def up(self, control_plane_only: bool = False) -> None:
        """Use the current kubeconfig as is (copied, flattened, to .cluster/kubeconfig)."""
        if control_plane_only:
            raise ClusterError("--control-plane-only is the local provider's")
        _use_kubeconfig()

    def down(self) -> None:
        """Nothing: the cluster is not ours (``cluster-down`` forgets its kubeconfig)."""

    def can_load(self) -> bool:
        return False

    def load_image(self, image: str) -> None:
        raise ClusterError(f"provider existing: push {image} to a registry the cluster pulls from")


def _use_kubeconfig() -> None:
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
