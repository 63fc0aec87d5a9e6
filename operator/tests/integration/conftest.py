"""A real kube-apiserver for the operator's integration tests (from `make cluster-up`), the CRD,
a namespace per test, and the operator itself: in a thread of the tests' process (``kopf.operator``),
or as a process of its own (``python -m mlmodel_operator``) where a test must kill it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
# Before kopf and the Kubernetes client are imported: the client reads KUBECONFIG once, on import.
os.environ.setdefault("KUBECONFIG", str(REPO / ".cluster" / "kubeconfig"))

import kopf  # noqa: E402
import mlmodel_operator.handlers  # noqa: E402, F401 - registers the handlers
from mlmodel_operator import config, kube  # noqa: E402
from mlmodel_testing.cluster import Cluster  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

CRD = REPO / "crds" / "modeldeployments.mlmodel.io.yaml"
DEADLINE_S = 60.0
ROUTER_ABSENT = "mlmodel-router:absent"  # the operator's router image here: no router pod starts


def _kubeconfig() -> str:
    path = os.environ["KUBECONFIG"]
    if not Path(path).is_file():
        pytest.fail(f"no kubeconfig at {path}: run `make cluster-up` (or `make cluster-up-control-plane`) first")
    return path


def _kubectl_path() -> str:
    pinned = Path(_kubeconfig()).parent / "bin" / "kubectl"  # the harness links it beside the kubeconfig
    return str(pinned) if pinned.exists() else "kubectl"


# kubectl's names for the kinds these tests read, as the API's (plural) resource names.
RESOURCES = {
    "crd": "customresourcedefinitions",
    "md": "modeldeployments",
    "modeldeployment": "modeldeployments",
    "deployment": "deployments",
    "service": "services",
    "configmap": "configmaps",
    "hpa": "horizontalpodautoscalers",
    "horizontalpodautoscaler": "horizontalpodautoscalers",
    "lease": "leases",
    "resourcequota": "resourcequotas",
}


class Kubectl:
    """kubectl against the test cluster, returning parsed JSON where asked. Reads (``read``, ``get``) go to the API
    on one kept-alive connection instead (``Cluster.get``): tests poll them, and a kubectl costs 60 ms of CPU."""

    def __init__(self, kubeconfig: str) -> None:
        self.env = {**os.environ, "KUBECONFIG": kubeconfig}
        self.binary = _kubectl_path()
        self.cluster = Cluster("existing", Path(kubeconfig), self.binary)  # the API on one kept-alive connection

    def __call__(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.binary, *args], input=stdin, capture_output=True, text=True, env=self.env, timeout=60
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json").stdout)

    def read(
        self,
        kind: str,
        name: str | None = None,
        namespace: str | None = None,
        *,
        selector: str | None = None,
        fields: str | None = None,
    ) -> Any:
        """What ``kubectl get <kind> [name] [-n namespace] [-l selector] [--field-selector fields] -o json`` prints,
        managed fields included; AssertionError with the API's answer if it has none."""
        resource = RESOURCES.get(kind, kind)
        return self.cluster.get(resource, name, namespace=namespace, selector=selector, fields=fields)

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        """The object, or None where there is none."""
        found: dict[str, Any] | None = self.cluster.get(
            RESOURCES.get(kind, kind), name, namespace=namespace, missing_ok=True
        )
        return found

    def apply(self, obj: dict[str, Any]) -> None:
        self("apply", "-f", "-", stdin=json.dumps(obj))


def eventually(check: Callable[[], Any], what: str, deadline: float = DEADLINE_S, interval: float = 0.25) -> Any:
    """Poll ``check`` until it returns something truthy, or fail naming ``what``."""
    end = time.monotonic() + deadline
    last: Any = None
    while time.monotonic() < end:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {deadline}s waiting for {what}; last value: {last!r}")


def converges(problems: Callable[[], list[str]], what: str, deadline: float = DEADLINE_S) -> None:
    """Poll ``problems`` until it finds none, or fail with the last ones it found."""
    end = time.monotonic() + deadline
    while found := problems():
        if time.monotonic() >= end:
            raise AssertionError(f"timed out after {deadline}s waiting for {what}; still wrong: {found}")
        time.sleep(0.25)


@pytest.fixture(scope="session")
def kubectl() -> Kubectl:
    kubectl = Kubectl(_kubeconfig())
    if kubectl("version", check=False).returncode != 0:
        pytest.fail("the API server in .cluster/kubeconfig does not answer: run `make cluster-up`")
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))  # a Helm install may own it
    # Polled, not `kubectl wait`: that fails at once while a new CRD's status.conditions is still null.
    eventually(lambda: _established(kubectl), "the CRD to be Established")
    return kubectl


def _established(kubectl: Kubectl) -> bool:
    crd = kubectl.read("crd", "modeldeployments.mlmodel.io")
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


@pytest.fixture
def namespace(kubectl: Kubectl) -> Iterator[str]:
    name = f"it-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


@pytest.fixture(scope="session", autouse=True)
def api() -> None:
    """``kube`` with the default settings, for the tests that call it themselves."""
    kube.configure(config.parse([], {}))


class InProcess:
    """The operator's handlers under ``kopf.operator`` in a thread of this process, with ``settings``
    in kopf's memo and ``kube`` configured from them, as ``__main__`` runs them. ``future``: the run's end."""

    def __init__(self, settings: config.Config) -> None:
        kube.configure(settings)
        self.settings = settings
        self.future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="operator", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        run = kopf.operator(
            standalone=True,
            namespaces=self.settings.namespaces,
            stop_flag=self._stop,
            memo=kopf.Memo(config=self.settings),
        )
        try:
            asyncio.run(run)
        except BaseException as err:  # noqa: BLE001 - handed to whoever stops it
            self.future.set_exception(err)
        else:
            self.future.set_result(None)

    def stop(self, timeout: float = 60) -> None:
        """Stop it and wait for it; raise what it raised."""
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError("the operator did not stop")
        self.future.result()


@pytest.fixture
def operator(namespace: str, kubectl: Kubectl) -> Iterator[Callable[..., InProcess]]:
    """Start (and restart) the operator, watching only this test's namespace, resyncing every 2 s;
    more flags (``"--resync-seconds", "600"``) override these. The environment plays no part.

    No pod serves in these tests (the model files and the router image are not there), so the
    operator never has to wait for traffic to move before it deletes what is no longer wanted.
    """
    started: list[InProcess] = []

    def start(*flags: str) -> InProcess:
        argv = ["--namespace", namespace, "--resync-seconds", "2", "--router-image", ROUTER_ABSENT, *flags]
        running = InProcess(config.parse(argv, {}))
        started.append(running)
        return running

    yield start
    for running in started:
        if not running.future.done():
            running.stop()


@dataclass
class OperatorProcess:
    """One ``python -m mlmodel_operator`` process, its Prometheus port (scraped on loopback) and its log."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def metrics(self) -> dict[str, float]:
        """Every sample name with its value summed over the labels, e.g. the passes started
        (``mlmodel_operator_reconciles_total``) and finished (``mlmodel_operator_reconcile_seconds_count``)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
        sums: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
        return sums

    def answers(self) -> bool:
        try:
            self.metrics()
        except OSError:
            assert self.process.poll() is None, f"the operator exited ({self.process.returncode}):\n{self.tail()}"
            return False
        return True

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is finished or cleaned up."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def operator_process(namespace: str, tmp_path: Path) -> Iterator[Callable[[], OperatorProcess]]:
    """Start (and start again) the operator as a process of its own, as the chart runs it but without
    leader election: watching only this test's namespace, resyncing every 2 s, with a router image
    that is not there (as under ``operator``). Started processes are killed at the end."""
    started: list[OperatorProcess] = []

    def start() -> OperatorProcess:
        log = tmp_path / f"operator-{len(started)}.log"
        port = _free_port()
        argv = [sys.executable, "-m", "mlmodel_operator", "--namespace", namespace, "--no-leader-election"]
        argv += ["--metrics-port", str(port), "--resync-seconds", "2", "--router-image", ROUTER_ABSENT]
        argv += ["--log-format", "plain"]
        with log.open("wb") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        running = OperatorProcess(process, port, log)
        started.append(running)
        eventually(running.answers, "the operator's metrics endpoint", deadline=30)
        return running

    yield start
    for running in started:
        running.kill()
