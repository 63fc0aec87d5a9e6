"""The ModelDeployment CRD, checked against a real kube-apiserver.

The CRD is applied (server-side, idempotent) once for the module and must become Established.
Then every sample under ``samples/valid`` and every manifest of ``manifests/examples`` must be
accepted by ``kubectl apply --dry-run=server --validate=strict``, and every sample under
``samples/invalid`` must be refused with the message listed for it in ``INVALID`` below: the
API server itself enforces the schema, so these are the errors users see.

The API server: ``$KUBECONFIG`` if set, else ``<repo>/.cluster/kubeconfig`` (``make
cluster-up-control-plane`` starts one in seconds). kubectl: ``<repo>/.cluster/bin/kubectl`` if
present, else ``kubectl`` on PATH. Without a reachable API server the tests fail, never skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
CRD_FILE = REPO / "crds" / "modeldeployments.mlmodel.io.yaml"
CRD_NAME = "modeldeployments.mlmodel.io"
SAMPLES = Path(__file__).resolve().parent / "samples"
EXAMPLES = REPO / "manifests" / "examples"
NAMESPACE = "mlmodel-crd-test"
FIELD_MANAGER = "mlmodel-crd-test"

# Each invalid sample and the fragments its error must contain: the field path and the message.
INVALID: dict[str, list[str]] = yaml.safe_load((SAMPLES / "invalid.yaml").read_text())

VALID_SAMPLES = sorted((SAMPLES / "valid").glob("*.yaml"))
EXAMPLE_MANIFESTS = sorted(EXAMPLES.glob("*.yaml"))


def _kubeconfig() -> Path:
    return Path(os.environ["KUBECONFIG"]) if os.environ.get("KUBECONFIG") else REPO / ".cluster" / "kubeconfig"


def _kubectl_binary() -> str:
    pinned = _kubeconfig().parent / "bin" / "kubectl"  # the harness links it beside the kubeconfig
    if pinned.exists():
        return str(pinned)
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail(f"no kubectl: neither {pinned} nor kubectl on PATH (run `make cluster-up-control-plane`)")
    return found


@dataclass(frozen=True)
class Kubectl:
    """kubectl bound to the test cluster's kubeconfig."""

    binary: str
    kubeconfig: Path

    def run(self, *args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run kubectl; the caller checks the return code."""
        return subprocess.run(
            [self.binary, f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ok(self, *args: str, stdin: str | None = None, timeout: float = 60) -> str:
        """Run kubectl and return its stdout; fail the test if it fails."""
        proc = self.run(*args, stdin=stdin, timeout=timeout)
        if proc.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        return proc.stdout

    def dry_run_apply(self, manifest: str) -> subprocess.CompletedProcess[str]:
        """Server-side dry run of `kubectl apply`, with strict field validation."""
        return self.run("apply", "-n", NAMESPACE, "--dry-run=server", "--validate=strict", "-f", "-", stdin=manifest)


def _wait_for(what: str, check: Any, timeout: float) -> None:
    """Poll check() until it returns true, or fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if last:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)


def _crd_condition(api: Kubectl, condition: str) -> bool:
    proc = api.run("get", "crd", CRD_NAME, "-o", "json")
    if proc.returncode != 0:
        return False
    conditions = (json.loads(proc.stdout).get("status") or {}).get("conditions") or []
    return any(c.get("type") == condition and c.get("status") == "True" for c in conditions)


@pytest.fixture(scope="module")
def api() -> Iterator[Kubectl]:
    """A reachable API server with the CRD applied and Established, and the test namespace."""
    config = _kubeconfig()
    if not config.exists():
        pytest.fail(f"no kubeconfig at {config}: start an API server with `make cluster-up-control-plane`")
    k = Kubectl(_kubectl_binary(), config)

    # The API server may be (re)starting: give it a little while before giving up.
    deadline = time.monotonic() + 60
    while True:
        proc = k.run("get", "--raw", "/readyz", timeout=15)
        if proc.returncode == 0:
            break
        if time.monotonic() > deadline:
            pytest.fail(
                f"the API server of {config} cannot be reached (start one with `make cluster-up-control-plane`):\n"
                f"{proc.stderr.strip()}"
            )
        time.sleep(1)

    # The default field manager ("kubectl"), as the operator tests' conftest uses: no conflicts.
    k.ok("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    _wait_for("the CRD to be Established", lambda: _crd_condition(k, "Established"), timeout=60)
    # Discovery of the new resource lags a little behind Established.
    _wait_for(
        "modeldeployments to be served",
        lambda: k.run("get", "modeldeployments.mlmodel.io", "-A").returncode == 0,
        timeout=60,
    )
    namespace = json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    k.ok("apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "-f", "-", stdin=namespace)
    yield k


def test_crd_is_established(api: Kubectl) -> None:
    crd = json.loads(api.ok("get", "crd", CRD_NAME, "-o", "json"))
    assert _crd_condition(api, "NamesAccepted")
    assert crd["spec"]["names"]["shortNames"] == ["md"]
    versions = crd["spec"]["versions"]
    assert [(v["name"], v["served"], v["storage"]) for v in versions] == [("v1alpha1", True, True)]
    assert versions[0]["subresources"] == {"status": {}}
    columns = [c["name"] for c in versions[0]["additionalPrinterColumns"]]
    assert columns == ["Ready", "Weights", "Model", "Replicas", "Phase", "Step", "URL", "Age"]


def _walk(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}{{}}")


def test_schema_is_strict_and_described(api: Kubectl) -> None:
    """No field keeps unknown fields, and every field the user can set or read is described."""
    crd = json.loads(api.ok("get", "crd", CRD_NAME, "-o", "json"))
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    undescribed, preserving = [], []
    for path, schema in _walk(root, "modeldeployment"):
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            preserving.append(path)
        # metadata is ObjectMeta: its documentation comes from Kubernetes itself.
        if not path.startswith("modeldeployment.metadata") and not schema.get("description"):
            undescribed.append(path)
    assert preserving == []
    assert undescribed == []


def test_explain_shows_descriptions(api: Kubectl) -> None:
    expected = [
        "The model variants to serve (1 to 10)",
        "Each variant is a model file served by its own Deployment and Service",
        "pvc://<claim>/<path>",
        "Share of the traffic sent to this variant, in percent",
    ]
    out = ""

    # The OpenAPI document that `kubectl explain` reads is published shortly after the CRD.
    def explained() -> bool:
        nonlocal out
        proc = api.run("explain", "modeldeployment.spec.variants")
        out = " ".join(proc.stdout.split())
        return proc.returncode == 0 and all(fragment in out for fragment in expected)

    _wait_for(f"kubectl explain modeldeployment.spec.variants to show {expected}", explained, timeout=60)
    weight = " ".join(api.ok("explain", "md.spec.variants.weight").split())
    assert "Required when there are several variants, and the weights must then sum to 100" in weight


@pytest.mark.parametrize("sample", VALID_SAMPLES, ids=lambda p: p.stem)
def test_valid_sample_is_accepted(api: Kubectl, sample: Path) -> None:
    proc = api.dry_run_apply(sample.read_text())
    assert proc.returncode == 0, proc.stderr
    assert "created (server dry run)" in proc.stdout or "configured (server dry run)" in proc.stdout


@pytest.mark.parametrize("manifest", EXAMPLE_MANIFESTS, ids=lambda p: p.name)
def test_example_manifest_is_accepted(api: Kubectl, manifest: Path) -> None:
    proc = api.dry_run_apply(manifest.read_text())
    assert proc.returncode == 0, proc.stderr


def test_every_invalid_sample_has_an_expected_message() -> None:
    on_disk = {p.stem for p in (SAMPLES / "invalid").glob("*.yaml")}
    assert on_disk == set(INVALID)


@pytest.mark.parametrize(("sample", "fragments"), sorted(INVALID.items()), ids=sorted(INVALID))
def test_invalid_sample_is_rejected(api: Kubectl, sample: str, fragments: list[str]) -> None:
    proc = api.dry_run_apply((SAMPLES / "invalid" / f"{sample}.yaml").read_text())
    assert proc.returncode != 0, f"{sample} was accepted:\n{proc.stdout}"
    for fragment in fragments:
        assert fragment in proc.stderr, f"expected {fragment!r} in:\n{proc.stderr}"


def test_a_300_kb_spec_is_refused_naming_its_env(api: Kubectl) -> None:
    """Ten env values of 30 KB each: every one within its own limit, the whole over the spec's 128 KiB."""
    env = [{"name": f"BLOB_{k}", "value": "x" * 30_000} for k in range(10)]
    variant = {"name": "v1", "modelUri": "file:///models/iris.joblib", "env": env}
    md = {"apiVersion": "mlmodel.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "big"}}
    # `kubectl create`: a client-side apply would first fail on its last-applied annotation (256 KiB at most).
    body = json.dumps({**md, "spec": {"variants": [variant]}})
    proc = api.run("create", "-n", NAMESPACE, "--dry-run=server", "--validate=strict", "-f", "-", stdin=body)
    assert proc.returncode != 0, f"a 300 KB spec was accepted:\n{proc.stdout}"
    assert "spec.variants: Invalid value" in proc.stderr, proc.stderr
    assert "spec.variants[*].env and spec.variants[*].podAnnotations must total at most 128 KiB" in proc.stderr


def _status_apply(api: Kubectl, status: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    patch = {
        "apiVersion": "mlmodel.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "status-contract"},
        "status": status,
    }
    return api.run(
        "apply",
        "-n",
        NAMESPACE,
        "--server-side",
        "--subresource=status",
        "--dry-run=server",
        "--validate=strict",
        f"--field-manager={FIELD_MANAGER}",
        "-f",
        "-",
        stdin=json.dumps(patch),
    )


def test_status_schema(api: Kubectl) -> None:
    """The status the operator writes is accepted; unknown or mistyped status fields are not."""
    obj = {
        "apiVersion": "mlmodel.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "status-contract"},
        # replicas 0: should an operator be watching this namespace, it starts no pod.
        "spec": {"variants": [{"name": "stable", "modelUri": "file:///models/iris.joblib", "replicas": 0}]},
    }
    api.ok(
        "apply", "-n", NAMESPACE, "--server-side", f"--field-manager={FIELD_MANAGER}", "-f", "-", stdin=json.dumps(obj)
    )
    try:
        ready: dict[str, Any] = {
            "type": "Ready",
            "status": "True",
            "reason": "AllReplicasReady",
            "message": "every variant has its desired replicas ready",
            "lastTransitionTime": "2025-01-01T00:00:00Z",
            "observedGeneration": 1,
        }
        good: dict[str, Any] = {
            "observedGeneration": 1,
            "url": f"http://status-contract.{NAMESPACE}.svc.cluster.local",
            "weights": "stable=100",
            "replicas": "0/0",
            "routing": "the entry Service selects the only variant",
            "conditions": [ready],
            "variants": [
                {
                    "name": "stable",
                    "weight": 100,
                    "desiredReplicas": 0,
                    "readyReplicas": 0,
                    "modelUri": "file:///models/iris.joblib",
                }
            ],
        }
        proc = _status_apply(api, good)
        assert proc.returncode == 0, proc.stderr

        proc = _status_apply(api, {**good, "phase": "Running"})
        assert proc.returncode != 0
        assert ".status.phase: field not declared in schema" in proc.stderr

        proc = _status_apply(api, {**good, "conditions": [{**ready, "status": "Yes"}]})
        assert proc.returncode != 0
        assert 'status.conditions[0].status: Unsupported value: "Yes"' in proc.stderr
    finally:
        api.run("delete", "-n", NAMESPACE, "modeldeployment", "status-contract", "--ignore-not-found", "--wait=false")
