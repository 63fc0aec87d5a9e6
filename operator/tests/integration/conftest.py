"""A real kube-apiserver for the operator's integration tests (from `make cluster-up`), the CRD,
a namespace per test, and the operator itself under kopf's KopfRunner."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
# Before kopf and the Kubernetes client are imported: the client reads KUBECONFIG once, on import.
os.environ.setdefault("KUBECONFIG", str(REPO / ".cluster" / "kubeconfig"))

from kopf.testing import KopfRunner  # noqa: E402

CRD = REPO / "crds" / "modeldeployments.mlmodel.io.yaml"
DEADLINE_S = 60.0


def _kubeconfig() -> str:
    path = os.environ["KUBECONFIG"]
    if not Path(path).is_file():
        pytest.fail(f"no kubeconfig at {path}: run `make cluster-up` (or `make cluster-up-control-plane`) first")
    return path


def _kubectl_path() -> str:
    local = REPO / ".cluster" / "bin" / "kubectl"
    return str(local) if local.exists() else "kubectl"


class Kubectl:
    """kubectl against the test cluster, returning parsed JSON where asked."""

    def __init__(self, kubeconfig: str) -> None:
        self.env = {**os.environ, "KUBECONFIG": kubeconfig}
        self.binary = _kubectl_path()

    def __call__(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.binary, *args], input=stdin, capture_output=True, text=True, env=self.env, timeout=60
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json").stdout)

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        result = self("get", kind, name, "-n", namespace, "-o", "json", check=False)
        return json.loads(result.stdout) if result.returncode == 0 else None

    def apply(self, obj: dict[str, Any]) -> None:
        self("apply", "-f", "-", stdin=json.dumps(obj))


def eventually(check: Callable[[], Any], what: str, deadline: float = DEADLINE_S) -> Any:
    """Poll ``check`` until it returns something truthy, or fail naming ``what``."""
    end = time.monotonic() + deadline
    last: Any = None
    while time.monotonic() < end:
        last = check()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out after {deadline}s waiting for {what}; last value: {last!r}")


@pytest.fixture(scope="session")
def kubectl() -> Kubectl:
    kubectl = Kubectl(_kubeconfig())
    if kubectl("version", check=False).returncode != 0:
        pytest.fail("the API server in .cluster/kubeconfig does not answer: run `make cluster-up`")
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))  # a Helm install may own it
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/modeldeployments.mlmodel.io")
    return kubectl


@pytest.fixture
def namespace(kubectl: Kubectl) -> Iterator[str]:
    name = f"it-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


@pytest.fixture
def operator(namespace: str, kubectl: Kubectl, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], KopfRunner]]:
    """Start (and restart) the operator, watching only this test's namespace, resyncing every 2 s.

    No pod serves in these tests (the model files and the router image are not there), so the
    operator never has to wait for traffic to move before it deletes what is no longer wanted.
    """
    monkeypatch.setenv("RESYNC_SECONDS", "2")
    monkeypatch.setenv("ROUTER_IMAGE", "mlmodel-router:absent")
    runners: list[KopfRunner] = []

    def start() -> KopfRunner:
        runner = KopfRunner(
            ["run", "--standalone", "--namespace", namespace, "-m", "mlmodel_operator.handlers"],
            timeout=60,
        )
        runner.__enter__()
        runners.append(runner)
        return runner

    yield start
    for runner in runners:
        if runner.future and not runner.future.done():
            runner.__exit__(None, None, None)
