"""The e2e tests' access to the test cluster: ONE session fixture, ``cluster``.

``cluster`` brings the cluster up through the harness (idempotent: a running cluster is reused
in a second or two) and exposes:

* ``cluster.kubeconfig`` -- path of the kubeconfig,
* ``cluster.kubectl(*args)`` / ``cluster.kubectl_json(*args)`` -- the pinned kubectl,
* ``cluster.service_url(namespace, name, port)`` -- a context manager yielding an
  ``http://host:port`` base URL that reaches the Service from this host whatever the provider
  is (local: the host is the node, so the ClusterIP works through kube-proxy; kind: the harness
  routes the Service CIDR to the node, whose kube-proxy forwards it; existing: ``kubectl
  port-forward``, which pins one pod of the Service),
* ``cluster.wait_until(...)`` -- poll to a deadline,
* ``cluster.dump(namespace)`` -- pods, describe, logs and events, for failure reports.

Tests never look at ``cluster.provider`` to decide how to talk to the cluster. If the cluster
cannot be had the suite fails (loudly, with the harness's output); it never skips.
``MLMODEL_E2E_NO_UP=1`` uses ``.cluster/kubeconfig`` as it is, without running the harness.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import pytest

REPO = Path(__file__).resolve().parents[2]
HARNESS = [sys.executable, str(REPO / "hack" / "cluster" / "cluster.py")]
STATE = Path(os.environ.get("MLMODEL_CLUSTER_DIR", str(REPO / ".cluster")))
TEARDOWN_MARK = "tears_down_cluster"
SERVER_IMAGE = "mlmodel-server:0.1.0"
MODEL_STORE = REPO / "manifests" / "examples" / "model-store.yaml"


def run(
    argv: list[str], input: str | None = None, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run a tool (kubectl, helm) and, with ``check``, fail the test with its output when it fails."""
    p = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, check=False)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


@dataclass
class Cluster:
    provider: str
    kubeconfig: Path
    kubectl_bin: str

    @classmethod
    def at(cls, state: Path) -> Self:
        """The cluster the harness keeps in ``state``: its kubeconfig, provider and pinned kubectl."""
        provider = (state / "provider").read_text().strip() if (state / "provider").exists() else "existing"
        kubectl = state / "bin" / "kubectl"  # the pinned kubectl, linked there by `cluster up`
        return cls(provider, state / "kubeconfig", str(kubectl) if kubectl.exists() else "kubectl")

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        return run([self.kubectl_bin, "--kubeconfig", str(self.kubeconfig), *args], input, check, timeout)

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def apply(self, manifest: dict[str, Any] | list[dict[str, Any]]) -> None:
        items = manifest if isinstance(manifest, list) else [manifest]
        self.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
        )

    @staticmethod
    def wait_until(what: str, probe: Callable[[], Any], timeout: float, interval: float = 1.0) -> Any:
        """Poll probe() until it returns something truthy; AssertionError at the deadline."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                last = probe()
                if last:
                    return last
            except Exception as e:  # noqa: BLE001 - keep polling, report the last error
                last = e
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
            time.sleep(interval)

    @contextlib.contextmanager
    def service_url(self, namespace: str, name: str, port: int) -> Iterator[str]:
        """A base URL reaching Service namespace/name:port from this host, once it takes connections.

        On the local cluster that wait matters: kube-proxy rejects connections to a Service until it
        has synced the Service's first ready endpoint, a moment after the API shows it.
        """
        if self.provider in ("local", "kind"):
            ip = self.kubectl("-n", namespace, "get", "svc", name, "-o", "jsonpath={.spec.clusterIP}").stdout.strip()
            self.wait_until(f"{ip}:{port} (Service {name}) to take connections", lambda: _connects(ip, port), 30, 0.1)
            yield f"http://{ip}:{port}"
            return
        proc = subprocess.Popen(
            [
                self.kubectl_bin,
                "--kubeconfig",
                str(self.kubeconfig),
                "-n",
                namespace,
                "port-forward",
                f"svc/{name}",
                f":{port}",
                "--address",
                "127.0.0.1",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert proc.stdout is not None
            deadline = time.monotonic() + 30
            local_port = None
            while local_port is None and time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    break
                m = re.search(r"Forwarding from 127\.0\.0\.1:(\d+)", line)
                if m:
                    local_port = int(m.group(1))
            if local_port is None:
                raise AssertionError(f"kubectl port-forward svc/{name} did not start")
            yield f"http://127.0.0.1:{local_port}"
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)

    def dump(self, namespace: str) -> str:
        """Everything useful to understand a failure in a namespace."""
        parts = []
        for args in (
            ("get", "pods,svc,endpointslices,deploy,rs", "-o", "wide"),
            ("describe", "pods"),
            ("get", "events", "--sort-by=.lastTimestamp"),
        ):
            p = self.kubectl("-n", namespace, *args, check=False)
            parts.append(f"$ kubectl -n {namespace} {' '.join(args)}\n{p.stdout}{p.stderr}")
        pods = self.kubectl("-n", namespace, "get", "pods", "-o", "name", check=False).stdout.split()
        for pod in pods:
            p = self.kubectl(
                "-n",
                namespace,
                "logs",
                pod,
                "--all-containers",
                "--tail=80",
                check=False,
            )
            parts.append(f"$ kubectl -n {namespace} logs {pod}\n{p.stdout}{p.stderr}")
        return "\n".join(parts)


def _connects(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=2):
        return True
    return False


def _harness(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HARNESS, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    if os.environ.get("MLMODEL_E2E_NO_UP") != "1":
        p = _harness("up")
        if p.returncode != 0:
            pytest.fail(
                f"the test cluster could not be brought up:\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}", pytrace=False
            )
    kubeconfig = STATE / "kubeconfig"
    if not kubeconfig.exists():
        pytest.fail(
            f"no kubeconfig at {kubeconfig}: the cluster is not up (run `make cluster-up`)",
            pytrace=False,
        )
    c = Cluster.at(STATE)
    ready = c.kubectl("get", "--raw", "/readyz", check=False)
    if ready.returncode != 0:
        pytest.fail(f"the cluster's API server is not ready: {ready.stderr}", pytrace=False)
    return c


@pytest.fixture(scope="session")
def server_image(cluster: Cluster) -> str:
    """``mlmodel-server:0.1.0``, with all images built and loaded into the cluster (``make images``).

    Builds are cached by docker, and loading skips images the runtime already has, so this is
    quick after ``make images``.
    """
    if os.environ.get("MLMODEL_E2E_NO_UP") != "1":
        p = _harness("images")
        if p.returncode != 0:
            pytest.fail(f"building/loading the images failed:\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}", pytrace=False)
    return SERVER_IMAGE


@pytest.fixture(scope="session")
def operator(cluster: Cluster, server_image: str) -> Iterator[None]:
    """The CRD and the operator: ``helm upgrade --install`` of charts/mlmodel (release ``mlmodel``
    in ``mlmodel-system``, see ``release.py``; idempotent), restarted onto the images ``make
    images`` loaded (their tags do not change). Uninstalled at the end, so that no operator is
    left to fight another (the integration tests run their own); the CRD stays (``crds.keep``)."""
    from release import NAMESPACE, OPERATOR, RELEASE, helm, install

    install(cluster)
    cluster.kubectl("-n", NAMESPACE, "rollout", "restart", f"deployment/{OPERATOR}")
    cluster.kubectl("-n", NAMESPACE, "rollout", "status", f"deployment/{OPERATOR}", "--timeout=240s", timeout=300)
    yield
    helm(cluster, "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", check=False)


def train_models(out: Path) -> dict[str, str]:
    """Train the example models iris and iris-v2 into ``out`` (``server/examples/train_models.py``): their sha256."""
    python = REPO / ".venv" / "bin" / "python"
    trained = run(
        [
            str(python) if python.exists() else sys.executable,
            str(REPO / "server/examples/train_models.py"),
            "--out",
            str(out),
            "--only",
            "iris",
            "--only",
            "iris-v2",
        ],
        timeout=300,
    )
    return {m["name"]: m["sha256"] for m in map(json.loads, trained.stdout.splitlines())}


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example models iris and iris-v2, trained here."""
    out = tmp_path_factory.mktemp("models")
    train_models(out)
    return out


def deploy_model_store(cluster: Cluster, namespace: str, models: Path) -> None:
    """The models in ``models`` (the example models, and any a test made there), served in ``namespace``
    at http://model-store/<file>. Idempotent."""
    configmap = cluster.kubectl(
        "-n",
        namespace,
        "create",
        "configmap",
        "example-models",
        *(f"--from-file={path}" for path in sorted(models.glob("*.joblib"))),
        "--dry-run=client",
        "-o",
        "json",
    )
    # Server-side: a client-side apply would keep the models in an annotation, which is limited to 256 KiB.
    cluster.kubectl("-n", namespace, "apply", "--server-side", "--force-conflicts", "-f", "-", input=configmap.stdout)
    cluster.kubectl("-n", namespace, "apply", "-f", str(MODEL_STORE))


WRONG_DIGEST = "0" * 64


def broken_model(namespace: str) -> dict[str, Any]:
    """ModelDeployment ``broken``: the example iris model with a digest that does not match it."""
    return {
        "apiVersion": "mlmodel.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "broken", "namespace": namespace},
        "spec": {
            "variants": [{"name": "v1", "modelUri": "http://model-store/iris.joblib", "modelSha256": WRONG_DIGEST}]
        },
    }


def condition(cluster: Cluster, namespace: str, name: str, kind: str) -> dict[str, Any] | None:
    """The condition ``kind`` of ModelDeployment ``name``, if it has one."""
    md = cluster.kubectl_json("-n", namespace, "get", "modeldeployment", name)
    return next((c for c in (md.get("status") or {}).get("conditions") or [] if c["type"] == kind), None)


def is_true(cluster: Cluster, namespace: str, name: str, kind: str) -> dict[str, Any] | None:
    """The condition ``kind`` if it is True, else None."""
    found = condition(cluster, namespace, name, kind)
    return found if found and found["status"] == "True" else None


def snapshot(cluster: Cluster, namespace: str, name: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]], bool]:
    """One read of ModelDeployment ``name``: its status, its conditions by type, and whether the status
    has observed the latest generation (separate reads could straddle a pass)."""
    found = cluster.kubectl_json("-n", namespace, "get", "modeldeployment", name)
    status = found.get("status") or {}
    current = status.get("observedGeneration") == found["metadata"]["generation"]
    return status, {c["type"]: c for c in status.get("conditions") or []}, current


def settled(cluster: Cluster, namespace: str, name: str = "iris") -> dict[str, Any] | None:
    """The status once the operator has acted on the latest spec, every variant is ready and the router rolled out."""
    status, conditions, current = snapshot(cluster, namespace, name)
    ready, progressing = conditions.get("Ready", {}), conditions.get("Progressing", {})
    return status if current and ready.get("status") == "True" and progressing.get("status") == "False" else None


def wait_settled(cluster: Cluster, namespace: str, timeout: float = 240) -> dict[str, Any]:
    result: dict[str, Any] = cluster.wait_until("iris to settle", lambda: settled(cluster, namespace), timeout)
    return result


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace; on failure its pods/logs/events are printed, then it is deleted."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    cluster.wait_until(
        f"default ServiceAccount in {name}",
        lambda: cluster.kubectl("-n", name, "get", "sa", "default", check=False).returncode == 0,
        60,
    )
    yield name
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(f"\n===== cluster state of namespace {name} =====\n{cluster.dump(name)}")
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{rep.when}", rep)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{TEARDOWN_MARK}: runs `make cluster-down`; ordered last")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda it: it.get_closest_marker(TEARDOWN_MARK) is not None)
