"""The kind provider's pure parts and ``hack/cluster/runc-held-caps``, on this host."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from cluster.mlcluster import kindimage

HACK = Path(__file__).resolve().parents[1]


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
