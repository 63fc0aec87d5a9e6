"""The Helm chart against a real kube-apiserver: every rendered object passes a server-side dry run,
and the operator's permissions, as the API server grants them, are exactly the golden allowlist in
both scopes. No operator pod is needed: each release here runs none."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import yaml

from conftest import REPO, Kubectl

HELM = REPO / ".venv" / "bin" / "helm"
CHART = REPO / "charts" / "mlmodel"
GOLDEN = yaml.safe_load((REPO / "charts" / "tests" / "golden" / "rbac.yaml").read_text())
# A release of its own: no CRD (the kubectl fixture's), no user roles, no `helm test` pod.
ALONE = ["--set", "crds.enabled=false,rbac.aggregateClusterRoles=false,tests.enabled=false"]
MONITORING_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}  # no Prometheus Operator here
Permissions = dict[str, list[str]]


def helm(kubectl: Kubectl, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    if not HELM.exists():
        pytest.fail(f"{HELM} is missing: run `make install`")
    result = subprocess.run([str(HELM), *args], capture_output=True, text=True, env=kubectl.env, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


@contextmanager
def release(kubectl: Kubectl, namespace: str, *values: str) -> Iterator[str]:
    """A release of the chart with a unique name in ``namespace`` (created if missing): its
    ServiceAccount, as ``--as`` names it. Uninstalled after."""
    name = f"mlmodel-{uuid.uuid4().hex[:8]}"
    helm(kubectl, "install", name, str(CHART), "--namespace", namespace, "--create-namespace", *ALONE, *values)
    try:
        yield f"system:serviceaccount:{namespace}:{name}-operator"
    finally:
        helm(kubectl, "uninstall", name, "--namespace", namespace, "--wait", check=False)


def can_i(kubectl: Kubectl, account: str, namespace: str) -> Permissions:
    """``kubectl auth can-i --list`` of a ServiceAccount in a namespace: resource -> verbs."""
    out = kubectl("auth", "can-i", "--list", f"--as={account}", "-n", namespace).stdout
    found: dict[str, set[str]] = {}
    for line in out.splitlines()[1:]:
        row = re.fullmatch(r"(\S+)\s+\[(.*?)\]\s+\[(.*?)\]\s+\[(.*?)\]", line.strip())
        if row is None:
            assert re.fullmatch(r"\[.*\]\s+\[\]\s+\[.*\]", line.strip()), line  # a non-resource URL
            continue
        resource, _, resource_names, verbs = row.groups()
        assert not resource_names, line
        found.setdefault(resource, set()).update(verbs.split())
    return {k: sorted(v) for k, v in found.items()}


def _expected(*parts: Permissions) -> Permissions:
    out: dict[str, set[str]] = {}
    for part in (*parts, GOLDEN["everyone"]):
        for resource, verbs in part.items():
            out.setdefault(resource, set()).update(verbs)
    return {k: sorted(v) for k, v in out.items()}


def test_operator_permissions_are_the_golden_allowlist_in_cluster_scope(kubectl: Kubectl, namespace: str) -> None:
    """Two replicas, so the leader-election Role is there too, pinned to a node that does not
    exist: no pod runs. The release namespace is a fresh one; ``namespace`` is any other."""
    release_namespace = f"it-rbac-{uuid.uuid4().hex[:8]}"
    no_pod = ["--set", "replicaCount=2", "--set-string", "nodeSelector.mlmodel-test-no-such-node=none"]
    try:
        with release(kubectl, release_namespace, *no_pod) as account:
            golden = GOLDEN["cluster"]
            assert can_i(kubectl, account, namespace) == _expected(golden["cluster-wide"])
            in_release_namespace = _expected(golden["cluster-wide"], golden["release-namespace"])
            assert can_i(kubectl, account, release_namespace) == in_release_namespace
    finally:
        kubectl("delete", "namespace", release_namespace, "--wait=false", "--ignore-not-found")


@pytest.fixture
def watched(kubectl: Kubectl, namespace: str) -> Iterator[list[str]]:
    """Two fresh namespaces for a namespace-scope release to watch."""
    names = [f"{namespace}-watched-{i}" for i in (1, 2)]
    for name in names:
        kubectl("create", "namespace", name)
    yield names
    for name in names:
        kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


def test_operator_permissions_are_the_golden_allowlist_in_namespace_scope(
    kubectl: Kubectl, namespace: str, watched: list[str]
) -> None:
    """A release in ``namespace`` watching two others, with no operator pod: ``namespace`` is unwatched."""
    scope = ["--set", "rbac.scope=namespace", "--set", f"watchNamespaces={{{','.join(watched)}}}"]
    with release(kubectl, namespace, *scope, "--set", "replicaCount=0") as account:
        golden = GOLDEN["namespace"]
        assert can_i(kubectl, account, watched[0]) == _expected(golden["cluster-wide"], golden["watched"])
        assert can_i(kubectl, account, namespace) == _expected(golden["cluster-wide"])


@pytest.mark.parametrize("values", ["install.yaml", *sorted(p.name for p in (CHART / "ci").glob("*.yaml"))])
def test_rendered_manifests_pass_a_server_side_dry_run(kubectl: Kubectl, namespace: str, values: str) -> None:
    """The API server itself validates every rendered object (schemas, CEL, admission), and
    changes nothing. The chart is rendered into the test's namespace; every other namespace the
    objects name (install.yaml's own, the ones the values list) is made unique, and made to exist."""
    if values == "install.yaml":
        text = (REPO / "manifests" / "install.yaml").read_text()
    else:
        rendered = helm(kubectl, "template", "mlmodel", str(CHART), "-n", namespace, "-f", str(CHART / "ci" / values))
        text = rendered.stdout
    docs = [d for d in yaml.safe_load_all(text) if d]
    named = {d["metadata"]["namespace"] for d in docs if d["metadata"].get("namespace")} - {namespace}
    unique = {name: f"{name}-{namespace}" for name in named}
    for doc in docs:
        meta = doc["metadata"]
        if meta.get("namespace") in unique:
            meta["namespace"] = unique[meta["namespace"]]
        if doc["kind"] == "Namespace" and meta["name"] in unique:
            meta["name"] = unique[meta["name"]]
    kept = [d for d in docs if d["kind"] not in MONITORING_KINDS]
    assert len(docs) - len(kept) == (4 if values == "monitoring-values.yaml" else 0)
    try:
        for name in unique.values():
            kubectl("create", "namespace", name)
        out = kubectl(
            "apply",
            "--server-side",
            "--dry-run=server",
            "--force-conflicts",
            "--field-manager=it-dry-run",
            "-f",
            "-",
            stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": kept}),
        ).stdout
    finally:
        for name in unique.values():
            kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")
    assert out.count("(server dry run)") == len(kept), out
