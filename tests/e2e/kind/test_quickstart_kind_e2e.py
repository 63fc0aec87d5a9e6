"""The README's "Quickstart on your own cluster", run as written on the kind cluster: its ``sh`` blocks are
read from the page (there is no second copy of them) and run in order, as one bash script from the
repository's root, with ``KUBECONFIG`` pointing at the cluster and kind and kubectl on ``PATH``."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from mlmodel_testing.cluster import REPO, STATE, Cluster

README = REPO / "README.md"
HEADING = "## Quickstart on your own cluster"


def quickstart() -> list[str]:
    """The ``sh`` blocks under the README's quickstart heading, up to the next second-level heading."""
    section = README.read_text().split(f"\n{HEADING}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```sh\n(.*?)^```$", section, re.M | re.S)


def test_the_readme_quickstart_runs_as_written(cluster: Cluster, tmp_path: Path) -> None:
    blocks = quickstart()
    script = "\n".join(blocks)
    assert len(blocks) == 3 and "helm upgrade --install" in script and "kubectl -n demo patch md iris" in script
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "PATH": f"{STATE / 'bin'}:{os.environ['PATH']}",  # the harness's kubectl and kind
        # No test cluster in `make images`' state directory, as on a user's machine: it builds, and `kind load`
        # gives the three images to the cluster (not the examples' MLflow server's, 0.5 GB, which it never runs).
        "MLMODEL_CLUSTER_DIR": str(tmp_path / "no-cluster"),
    }
    try:
        ran = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
            start_new_session=True,  # its background port-forward goes with it
        )
        assert ran.returncode == 0, (
            f"the quickstart failed ({ran.returncode}):\n{ran.stdout[-6000:]}\n{ran.stderr[-6000:]}"
        )
        assert re.search(r"^X-Model-Variant: (stable|canary)", ran.stdout, re.M), ran.stdout[-3000:]
        # Two answers through the one port-forward: before the weights moved, and after (no router pod went).
        assert ran.stdout.count('{"predictions":[2],') == 2, ran.stdout[-3000:]
        assert re.search(r"^X-Router-Weights: stable=50,canary=50\r?$", ran.stdout, re.M), ran.stdout[-3000:]
        found = cluster.get("modeldeployments", "iris", namespace="demo")
        assert found["status"]["weights"] == "stable=50,canary=50", found["status"]
    finally:
        cluster.kubectl("delete", "namespace", "demo", "--wait=false", check=False)
