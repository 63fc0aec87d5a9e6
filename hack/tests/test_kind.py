"""The kind provider's pure parts and ``hack/cluster/runc-held-caps``, on this host."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from cluster.mlcluster import kindimage, versions
from cluster.mlcluster.common import ClusterError

HACK = Path(__file__).resolve().parents[1]

GO = """package nodeimage

const storageProvisionerImage = "docker.io/kindest/local-path-provisioner:v1"
const defaultStorageManifest = `kind: Deployment
image: ` + storageProvisionerImage + `
helper: ` + storageHelperImage + `
end: true`

var other = `not part of it`
"""


def test_the_storage_manifest_names_the_images_built_here() -> None:
    text = kindimage.storage_manifest(GO)
    assert text == (
        f"kind: Deployment\nimage: {versions.KIND_STORAGE_PROVISIONER_IMAGE}\n"
        f"helper: {versions.KIND_STORAGE_HELPER_IMAGE}\nend: true"
    )


def test_an_image_the_build_does_not_make_is_an_error() -> None:
    with pytest.raises(ClusterError, match="somethingElse"):
        kindimage.storage_manifest(GO.replace("storageHelperImage", "somethingElse"))


def test_the_static_cni_config_is_on_the_nodes_pod_subnet() -> None:
    ipam = kindimage.STATIC_CNI["plugins"][0]["ipam"]  # type: ignore[index]
    assert ipam["ranges"] == [[{"subnet": kindimage.NODE_POD_SUBNET}]]
    assert kindimage.NODE_POD_SUBNET.split("/")[0] == kindimage.POD_SUBNET.split("/")[0]


def _held() -> set[int]:
    status = Path("/proc/self/status").read_text()
    mask = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("CapBnd:")), 16)
    return {bit for bit in range(64) if mask >> bit & 1}


@pytest.mark.parametrize("command", ["create", "exec"])
def test_runc_is_asked_only_for_capabilities_this_host_holds(tmp_path: Path, command: str) -> None:
    caps = ["CAP_CHOWN", "CAP_NOT_A_CAPABILITY", "CAP_SYS_RESOURCE"]
    process = {"capabilities": {kind: list(caps) for kind in ("bounding", "effective", "permitted")}, "cwd": "/"}
    if command == "create":
        spec, args = tmp_path / "config.json", ["--root", "/x", "create", "--bundle", str(tmp_path), "id"]
        spec.write_text(json.dumps({"ociVersion": "1.0", "process": process}))
    else:
        spec, args = tmp_path / "process.json", ["exec", "--process", str(tmp_path / "process.json"), "id"]
        spec.write_text(json.dumps(process))
    echo = tmp_path / "runc"
    echo.write_text('#!/bin/sh\necho "$@"\n')
    echo.chmod(0o755)
    done = subprocess.run(
        [str(HACK / "cluster" / "runc-held-caps"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "MLMODEL_RUNC": str(echo)},
        check=True,
    )
    assert done.stdout.split() == args  # the real runc gets the same command line
    written = json.loads(spec.read_text())
    kept = (written["process"] if command == "create" else written)["capabilities"]
    want = ["CAP_CHOWN", *(["CAP_SYS_RESOURCE"] if 24 in _held() else [])]  # capability(7): CAP_SYS_RESOURCE is 24
    assert kept == {kind: want for kind in ("bounding", "effective", "permitted")}
    assert (written["process"] if command == "create" else written)["cwd"] == "/"
