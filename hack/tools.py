#!/usr/bin/env python3
"""The Go tools of the chart's tests and of ``make lint``, pinned, built once from their Go modules and
cached like the Kubernetes binaries (``~/.cache/mlmodel/<kind>/<version>/bin``, see
``hack/cluster/build-go-bins.sh``).

    python3 hack/tools.py [--link DIR] TOOL...   # build what is missing; print (or link) the paths

helm v3.22.0
    The newest Helm 3 on the module proxy when pinned; Helm 3 because the chart is an apiVersion
    v2 chart that Helm 3 users install, and ``helm.sh/helm/v3`` builds with ``go build`` alone.
prometheus v0.313.5 (Prometheus 3.13.5)
    Not the newest: the module proxy here answers 403 for some dependencies of v0.316.0.
    ``prometheus`` and ``promtool`` in one build, with only the Kubernetes service discovery
    (``remove_all_sd,enable_kubernetes_sd``) and no web UI assets, to keep the cold build short.
kubeconform v0.8.0
    Validates rendered manifests against JSON schemas made offline by ``hack/kubeschemas.py``.
actionlint v1.7.12
    Checks ``.github/workflows/`` (``make lint``): syntax, expressions, the inputs of known actions.
kind v0.30.0
    The kind provider's CLI: the release made for Kubernetes 1.34 (``versions.KIND``; the node image's
    other parts: ``hack/cluster/mlcluster/kindimage.py``).
docker-compose v5.6.0 (Docker Compose, the Go CLI plugin once versioned v2.x: ``github.com/docker/compose/v5``)
    The newest whose go.mod (go 1.26.8) the local Go toolchain builds; v5.7.x asks go 1.26.10 (GOTOOLCHAIN).
    A standalone ``docker-compose`` that also works as the ``docker compose`` CLI plugin.
minio v0.0.0-20260212201848-7aac2a2c5b7c (the MinIO server; its releases are tags the module proxy does not list)
    A real S3-compatible server for the tests of ``s3://`` models (``server/tests/test_s3.py``) and of a registry's
    S3 artifacts (``operator/tests/test_mlflow_s3.py``), run on loopback; never shipped (AGPL-3.0).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# hack/cluster's harness, reached as a namespace package from hack/ (this script's directory).
from cluster.mlcluster import versions
from cluster.mlcluster.binaries import ensure_go_tool, ensure_go_tools
from cluster.mlcluster.common import ClusterError

# tool -> (build kind of build-go-bins.sh, version, binaries that build makes)
BUILDS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "helm": ("helm", "v3.22.0", ("helm",)),
    "promtool": ("prometheus", versions.PROMETHEUS, ("prometheus", "promtool")),
    "prometheus": ("prometheus", versions.PROMETHEUS, ("prometheus", "promtool")),
    "kubeconform": ("kubeconform", "v0.8.0", ("kubeconform",)),
    "actionlint": ("actionlint", "v1.7.12", ("actionlint",)),
    "kind": ("kind", versions.KIND, ("kind",)),
    "docker-compose": ("compose", "v5.6.0", ("docker-compose",)),
    "minio": ("minio", "v0.0.0-20260212201848-7aac2a2c5b7c", ("minio",)),
}


def path(tool: str) -> Path:
    """The tool's binary, built first if the cache lacks it."""
    kind, version, names = BUILDS[tool]
    return ensure_go_tool(kind, version, names) / tool


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--link", type=Path, help="symlink each tool into this directory")
    parser.add_argument("tools", nargs="+", choices=sorted(BUILDS))
    args = parser.parse_args(argv)
    try:
        ensure_go_tools(BUILDS[tool] for tool in args.tools)  # side by side, where more than one is missing
        for tool in args.tools:
            binary = path(tool)
            if args.link:
                target = args.link / tool
                if not (target.is_symlink() and target.readlink() == binary):
                    # Atomically: `make test` runs two lanes that both link the tools while the other may use them.
                    staged = target.with_name(f".{tool}.{os.getpid()}")
                    staged.unlink(missing_ok=True)
                    staged.symlink_to(binary)
                    staged.replace(target)
            print(binary)
    except ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
