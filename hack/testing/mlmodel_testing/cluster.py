"""Access to the test cluster: the harness's state directory, and kubectl against the cluster kept there.

``Cluster.at(STATE)`` reads the kubeconfig, provider and pinned kubectl that ``hack/cluster/cluster.py up``
wrote. ``cluster.service_url(namespace, name, port)`` reaches a Service from this host whatever the provider
is (local: the host is the node, so the ClusterIP works through kube-proxy; kind: the harness routes the
Service CIDR to the node, whose kube-proxy forwards it; existing: ``kubectl port-forward``, which pins one pod
of the Service), so callers never look at ``cluster.provider`` to decide how to talk to the cluster.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import IO, Any, Self

from kubernetes import config
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from mlmodel_operator import names

REPO = Path(__file__).resolve().parents[3]
HARNESS = [sys.executable, str(REPO / "hack" / "cluster" / "cluster.py")]
STATE = Path(os.environ.get("MLMODEL_CLUSTER_DIR", str(REPO / ".cluster")))  # as the harness picks it
CACHE = Path(os.environ.get("MLMODEL_CACHE_DIR", str(Path.home() / ".cache" / "mlmodel")))  # the builds', kept
SERVER_IMAGE = "mlmodel-server:0.1.0"
PLUGIN_DIR = REPO / ".venv" / "bin"  # where `make install` puts kubectl-mlmodel

# Where the API serves the resources that tests read with ``Cluster.get`` (by their plural names), and which of
# them are not namespaced.
API_PATHS = {
    "pods": "api/v1",
    "services": "api/v1",
    "events": "api/v1",
    "namespaces": "api/v1",
    "configmaps": "api/v1",
    "resourcequotas": "api/v1",
    "deployments": "apis/apps/v1",
    "horizontalpodautoscalers": "apis/autoscaling/v2",
    "poddisruptionbudgets": "apis/policy/v1",
    "leases": "apis/coordination.k8s.io/v1",
    "modeldeployments": f"apis/{names.GROUP}/{names.VERSION}",
    "customresourcedefinitions": "apis/apiextensions.k8s.io/v1",
}
CLUSTER_SCOPED = frozenset({"namespaces", "customresourcedefinitions"})


def run(
    argv: list[str],
    input: str | None = None,
    check: bool = True,
    timeout: float = 120,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a tool (kubectl, helm) and, with ``check``, fail the test with its output when it fails."""
    p = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, check=False, env=env)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def plugin_path(kubectl: str) -> str:
    """A PATH on which ``kubectl`` finds ``kubectl mlmodel`` (``make install`` puts it in .venv/bin) and the plugin
    finds that kubectl before any other, as on a user's PATH."""
    kubectl_dir = str(Path(shutil.which(kubectl) or kubectl).parent)
    return os.pathsep.join([str(PLUGIN_DIR), kubectl_dir, os.environ.get("PATH", "")])


@dataclass
class Cluster:
    """A cluster the harness brought up (``local``, ``kind``) or was pointed at (``existing``)."""

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
        """``kubectl <args>`` against this cluster (see ``run``)."""
        return run([self.kubectl_bin, "--kubeconfig", str(self.kubeconfig), *args], input, check, timeout)

    def as_user(self, namespace: str, role: str, directory: Path) -> Cluster:
        """This cluster as a user bound to the ClusterRole ``role`` (``edit``, say) in ``namespace`` only: a
        ServiceAccount's token, in a kubeconfig of its own written to ``directory`` (in that namespace)."""
        account = f"{role}-user"
        for kind, *extra in (
            ("serviceaccount",),
            ("rolebinding", f"--clusterrole={role}", f"--serviceaccount={namespace}:{account}"),
        ):
            made = self.kubectl("-n", namespace, "create", kind, account, *extra, "--dry-run=client", "-o", "json")
            self.kubectl("apply", "-f", "-", input=made.stdout)
        token = self.kubectl("-n", namespace, "create", "token", account).stdout.strip()
        raw = json.loads(self.kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
        raw["users"] = [{"name": account, "user": {"token": token}}]
        raw["contexts"][0]["context"] |= {"user": account, "namespace": namespace}
        path = directory / f"{namespace}-{role}.kubeconfig"
        path.write_text(json.dumps(raw))
        return Cluster(self.provider, path, self.kubectl_bin)

    def mlmodel(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``kubectl mlmodel <args>``: the plugin (``make install`` puts it in .venv/bin), found by kubectl on PATH, and
        kubectl by the plugin, as on a user's PATH. kubectl hands a plugin no flags of its own, so the kubeconfig goes
        in the environment."""
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PATH": plugin_path(self.kubectl_bin)}
        return run([self.kubectl_bin, "mlmodel", *args], check=check, env=env)

    def get(
        self,
        resource: str,
        name: str | None = None,
        *,
        namespace: str | None = None,
        selector: str | None = None,
        fields: str | None = None,
        missing_ok: bool = False,
    ) -> Any:
        """What ``kubectl get <resource> [name] -o json`` prints, read from the API in one request on a kept-alive
        connection: tests poll, and a kubectl costs about 60 ms of CPU each time. A list has ``items``; without
        ``namespace``, a namespaced resource is listed in every namespace, and each item names its kind as kubectl's
        do. ``None`` for a named object that is not there, with ``missing_ok``; otherwise AssertionError with the
        API's answer if it refuses."""
        path = f"/{API_PATHS[resource]}"
        if namespace is not None and resource not in CLUSTER_SCOPED:
            path += f"/namespaces/{namespace}"
        path += f"/{resource}" + (f"/{name}" if name else "")
        query = [(key, value) for key, value in (("labelSelector", selector), ("fieldSelector", fields)) if value]
        try:
            response = self._api.call_api(
                path,
                "GET",
                query_params=query,
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=True,
                _request_timeout=30,
            )
        except ApiException as err:
            if missing_ok and name and err.status == 404:
                return None
            raise AssertionError(f"GET {path} failed ({err.status}): {err.body}") from err
        found = json.loads(response.data)
        for item in found.get("items", []) if name is None else []:
            item.update(kind=found["kind"].removesuffix("List"), apiVersion=found["apiVersion"])
        return found

    @cached_property
    def _api(self) -> ApiClient:
        """A client of the API with this cluster's kubeconfig, made on first use."""
        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def apply(self, manifest: dict[str, Any] | list[dict[str, Any]]) -> None:
        """``kubectl apply`` of one object or several."""
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

    def watch_until(self, what: str, args: list[str], probe: Callable[[Any], Any], timeout: float) -> Any:
        """Until ``probe(object)`` is truthy for the object ``kubectl get <args>`` names, as one ``kubectl get
        --watch`` streams its versions: each change seen as it is made, and one process for the whole wait, not a
        kubectl a poll. A watch that ends is started again; AssertionError at the deadline."""
        deadline = time.monotonic() + timeout
        argv = [self.kubectl_bin, "--kubeconfig", str(self.kubeconfig), "get", *args, "--watch", "-o", "json"]
        last: Any = None
        error = ""  # the last a kubectl that ended said
        while True:
            with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
                assert proc.stdout is not None and proc.stderr is not None
                try:
                    for found in _objects(proc.stdout, deadline):
                        last = probe(found)
                        if last:
                            return last
                finally:
                    proc.kill()
                    error = proc.stderr.read().decode(errors="replace").strip() or error
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r}; {error})")
            time.sleep(1)

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
        with self.port_forward(namespace, name, port) as base:
            yield base

    @contextlib.contextmanager
    def port_forward(self, namespace: str, name: str, port: int) -> Iterator[str]:
        """``kubectl port-forward svc/<name>``, as a user would run it: a base URL on loopback. It is pinned
        to one of the Service's pods (kubectl picks one), so it ends when that pod goes."""
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


def _objects(stream: IO[bytes], deadline: float) -> Iterator[Any]:
    """The JSON documents ``stream`` carries one after the other (``kubectl get --watch -o json``), as each is
    complete, until the stream ends or the deadline."""
    utf8, documents, text = codecs.getincrementaldecoder("utf-8")(), json.JSONDecoder(), ""
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([stream], [], [], left)[0]:
            return
        chunk = os.read(stream.fileno(), 1 << 16)
        if not chunk:
            return
        text += utf8.decode(chunk)
        while text := text.lstrip():
            try:
                found, end = documents.raw_decode(text)
            except json.JSONDecodeError:
                break
            yield found
            text = text[end:]


def _connects(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=2):
        return True
    return False


def harness(*args: str) -> subprocess.CompletedProcess[str]:
    """``hack/cluster/cluster.py <args>`` (up, images, ...), its output kept."""
    return subprocess.run(
        [*HARNESS, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
