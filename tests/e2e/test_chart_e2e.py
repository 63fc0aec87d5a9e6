"""The Helm chart on the test cluster: the install serves a model in a restricted namespace without
a Pod Security warning, ``helm test`` passes, an upgrade under 20 req/s loses no request, the
operator's permissions are exactly the golden allowlist in both scopes, and an uninstall leaves
nothing but the CRD."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlmodel_testing.cluster import REPO, Cluster
from mlmodel_testing.load import burst, call, constant_load
from mlmodel_testing.models import CANARY_EXAMPLE, deploy_model_store
from mlmodel_testing.release import (
    CHART,
    CRD,
    NAMESPACE,
    OPERATOR,
    RELEASE,
    helm,
    install,
    leader_metrics,
    leader_pod,
    restricted_namespace,
)
from mlmodel_testing.status import is_true, router_digest, wait_settled

GOLDEN = yaml.safe_load((REPO / "charts" / "tests" / "golden" / "rbac.yaml").read_text())
UPGRADE_RATE = 20.0
Permissions = dict[str, list[str]]


@pytest.fixture
def restricted(cluster: Cluster, namespace: str) -> str:
    """The test's namespace, enforcing (and warning about) the restricted Pod Security profile."""
    restricted_namespace(cluster, namespace)
    return namespace


def serve_canary(cluster: Cluster, namespace: str, models: Path) -> None:
    deploy_model_store(cluster, namespace, models)
    cluster.kubectl("-n", namespace, "apply", "-f", str(CANARY_EXAMPLE))
    cluster.wait_until("iris to be Ready", lambda: is_true(cluster, namespace, "iris", "Ready"), 300, interval=2)


def test_install_serves_a_model_with_no_pod_security_warning(
    cluster: Cluster, operator: None, restricted: str, models: Path
) -> None:
    result = install(cluster)  # the release exists: an upgrade with the same values
    assert "PodSecurity" not in result.stderr, result.stderr
    serve_canary(cluster, restricted, models)
    with cluster.service_url(restricted, "iris", 80) as base:
        reply = cluster.wait_until("a prediction through the router", lambda: _predict(base), 60)
    assert reply["predictions"] == [0], reply
    # Everything the operator made runs under the restricted profile: no pod was refused.
    events = cluster.kubectl("-n", restricted, "get", "events", "-o", "json").stdout
    assert "violates PodSecurity" not in events
    pods = cluster.kubectl_json("-n", restricted, "get", "pods")["items"]
    apps = {p["metadata"]["labels"].get("app.kubernetes.io/name") for p in pods}
    assert {"mlmodel-server", "mlmodel-router"} <= apps, apps
    tested = helm(cluster, "test", RELEASE, "--namespace", NAMESPACE, timeout=300)
    assert re.search(r"Phase:\s+Succeeded", tested.stdout), tested.stdout


def _predict(base: str) -> Any:
    result = call(base)
    return json.loads(result.body) if result.status == 200 else None


def test_upgrade_under_load_fails_no_request(cluster: Cluster, operator: None, restricted: str, models: Path) -> None:
    serve_canary(cluster, restricted, models)
    wait_settled(cluster, restricted)
    digest = router_digest(cluster, restricted)
    with cluster.service_url(restricted, "iris", 80) as base:
        # The load starts once only the current router answers: this measures the upgrade alone.
        cluster.wait_until(
            "every answer from the current router",
            lambda: all(r.status == 200 and r.config == digest for r in burst(base, 20)),
            60,
        )
    before = leader_pod(cluster)
    assert before is not None
    ready = f'mlmodel_operator_ready{{name="iris",namespace="{restricted}"}} 1.0'
    with (
        cluster.service_url(restricted, "iris", 80) as base,
        constant_load(base, UPGRADE_RATE) as load,
    ):
        start = time.monotonic()
        try:
            # A changed value: the operator pods are replaced one by one, a new one leads and
            # reconciles everything anew; the load goes on for at least 30 s, until it has
            # reconciled iris.
            install(cluster, "--set", "resyncSeconds=11")
            upgraded = time.monotonic() - start
            cluster.wait_until(
                "a new leader to report iris Ready, after 30 s of load",
                lambda: (
                    leader_pod(cluster) not in (None, before)
                    and ready in leader_metrics(cluster)
                    and time.monotonic() - start >= 30
                ),
                180,
            )
        finally:
            install(cluster)
        elapsed = time.monotonic() - start
    results = load.since(start)
    failed = [r for r in results if r.status != 200]
    spans: dict[str | None, list[float]] = {}
    for r in results:
        spans.setdefault(r.config, []).append(round(r.sent - start, 1))
    seen = {config: (times[0], times[-1]) for config, times in spans.items()}
    assert not failed, (
        f"upgrade from 0 s, done at {upgraded:.1f} s; router configs (first, last request): {seen}",
        [(round(r.sent - start, 1), r) for r in failed[:10]],
    )
    assert len(results) >= 0.9 * UPGRADE_RATE * elapsed, (len(results), elapsed)


def can_i(cluster: Cluster, account: str, namespace: str) -> Permissions:
    """``kubectl auth can-i --list`` of a ServiceAccount in a namespace: resource -> verbs."""
    out = cluster.kubectl("auth", "can-i", "--list", f"--as={account}", "-n", namespace).stdout
    found: dict[str, set[str]] = {}
    for line in out.splitlines()[1:]:
        row = re.fullmatch(r"(\S+)\s+\[(.*?)\]\s+\[(.*?)\]\s+\[(.*?)\]", line.strip())
        if row is None:
            assert re.fullmatch(r"\[.*\]\s+\[\]\s+\[.*\]", line.strip()), line  # a non-resource URL
            continue
        resource, _, names, verbs = row.groups()
        assert not names, line
        found.setdefault(resource, set()).update(verbs.split())
    return {k: sorted(v) for k, v in found.items()}


def _expected(*parts: Permissions) -> Permissions:
    out: dict[str, set[str]] = {}
    for part in (*parts, GOLDEN["everyone"]):
        for resource, verbs in part.items():
            out.setdefault(resource, set()).update(verbs)
    return {k: sorted(v) for k, v in out.items()}


def test_operator_permissions_are_the_golden_allowlist_in_cluster_scope(
    cluster: Cluster, operator: None, namespace: str
) -> None:
    account = f"system:serviceaccount:{NAMESPACE}:{OPERATOR}"
    golden = GOLDEN["cluster"]
    assert can_i(cluster, account, namespace) == _expected(golden["cluster-wide"])
    assert can_i(cluster, account, NAMESPACE) == _expected(golden["cluster-wide"], golden["release-namespace"])


@pytest.fixture
def namespace_scoped(cluster: Cluster, namespace: str) -> Iterator[tuple[str, str, str]]:
    """A second release in namespace scope, watching two fresh namespaces, with no operator pod
    (one operator per cluster): its ServiceAccount, a watched and an unwatched namespace."""
    suffix = uuid.uuid4().hex[:6]
    release, watched = f"mlmodel-ns-{suffix}", [f"e2e-watched-{suffix}-{i}" for i in (1, 2)]
    for name in watched:
        cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    args = ["--set", "rbac.scope=namespace", "--set", f"watchNamespaces={{{','.join(watched)}}}"]
    args += ["--set", "replicaCount=0,crds.enabled=false,rbac.aggregateClusterRoles=false,tests.enabled=false"]
    helm(cluster, "install", release, str(CHART), "--namespace", namespace, "--wait", *args)
    try:
        yield f"system:serviceaccount:{namespace}:{release}-operator", watched[0], namespace
    finally:
        helm(cluster, "uninstall", release, "--namespace", namespace, "--wait", check=False)
        for name in watched:
            cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_operator_permissions_are_the_golden_allowlist_in_namespace_scope(
    cluster: Cluster, namespace_scoped: tuple[str, str, str]
) -> None:
    account, watched, unwatched = namespace_scoped
    golden = GOLDEN["namespace"]
    assert can_i(cluster, account, watched) == _expected(golden["cluster-wide"], golden["watched"])
    assert can_i(cluster, account, unwatched) == _expected(golden["cluster-wide"])


RELEASE_KINDS = "deployments,replicasets,pods,services,serviceaccounts,configmaps,roles,rolebindings"
CLUSTER_KINDS = "clusterroles,clusterrolebindings"


def _release_objects(cluster: Cluster) -> list[str]:
    selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/managed-by=Helm"
    names = []
    for args in (("get", "-A", RELEASE_KINDS), ("get", CLUSTER_KINDS)):
        out = cluster.kubectl(*args, "-l", selector, "-o", "name").stdout
        names += out.split()
    return names


def test_uninstall_leaves_nothing_but_the_crd(cluster: Cluster, operator: None, restricted: str, models: Path) -> None:
    serve_canary(cluster, restricted, models)
    assert any(n.startswith("deployment") for n in _release_objects(cluster))
    try:
        helm(cluster, "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout", "3m")
        cluster.wait_until("the release's objects to go", lambda: not _release_objects(cluster), 120)
        crd = cluster.kubectl_json("get", "crd", CRD)
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        # The ModelDeployment, and the model it serves, outlive the operator.
        assert cluster.kubectl_json("-n", restricted, "get", "modeldeployment", "iris")["metadata"]["name"] == "iris"
        assert helm(cluster, "status", RELEASE, "--namespace", NAMESPACE, check=False).returncode != 0
        # With no operator, deleting it finishes (it carries no finalizer), its children go with it,
        # and so does the namespace.
        cluster.kubectl("-n", restricted, "delete", "modeldeployment", "iris", "--timeout=60s", timeout=90)
        cluster.wait_until(
            "iris's children to be garbage-collected",
            lambda: (
                not cluster.kubectl(
                    "-n", restricted, "get", "deploy,svc", "-l", "app.kubernetes.io/instance=iris", "-o", "name"
                ).stdout.strip()
            ),
            60,
        )
        cluster.kubectl("delete", "namespace", restricted, "--timeout=120s", timeout=150)
        # A fresh install: every object is created anew in the restricted namespace, with no warning.
        fresh = install(cluster)
        assert "PodSecurity" not in fresh.stderr, fresh.stderr
    except BaseException:
        install(cluster)
        raise


MONITORING_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}  # no Prometheus Operator here


@pytest.mark.parametrize("values", ["install.yaml", *sorted(p.name for p in (CHART / "ci").glob("*.yaml"))])
def test_rendered_manifests_pass_a_server_side_dry_run(cluster: Cluster, operator: None, values: str) -> None:
    """The API server itself validates every rendered object (schemas, CEL, admission), and
    changes nothing. The namespace-scope values name namespaces that must exist."""
    if values == "install.yaml":
        text = (REPO / "manifests" / "install.yaml").read_text()
    else:
        text = helm(cluster, "template", RELEASE, str(CHART), "-n", NAMESPACE, "-f", str(CHART / "ci" / values)).stdout
    docs = [d for d in yaml.safe_load_all(text) if d]
    extra = {d["metadata"]["namespace"] for d in docs if d["metadata"].get("namespace")} - {NAMESPACE}
    for name in extra:
        cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    kept = [d for d in docs if d["kind"] not in MONITORING_KINDS]
    assert len(docs) - len(kept) == (4 if values == "monitoring-values.yaml" else 0)
    out = cluster.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--force-conflicts",
        "--field-manager=e2e-dry-run",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": kept}),
    ).stdout
    for name in extra:
        cluster.kubectl("delete", "namespace", name, "--wait=false")
    assert out.count("(server dry run)") == len(kept), out


def test_namespace_scope_operator_serves_only_its_namespaces(
    cluster: Cluster, operator: None, restricted: str, models: Path
) -> None:
    """The same release in namespace scope: with only the Role in its namespace (and read access
    to CRDs and Namespaces), the operator serves a model there and leaves another namespace alone."""
    other = f"e2e-unwatched-{uuid.uuid4().hex[:6]}"
    restricted_namespace(cluster, other)
    try:
        install(cluster, "--set", "rbac.scope=namespace", "--set", f"watchNamespaces={{{restricted}}}")
        cluster.kubectl("-n", other, "apply", "-f", str(CANARY_EXAMPLE))
        serve_canary(cluster, restricted, models)
        with cluster.service_url(restricted, "iris", 80) as base:
            reply = cluster.wait_until("a prediction through the router", lambda: _predict(base), 60)
        assert reply["predictions"] == [0], reply
        ignored = cluster.kubectl_json("-n", other, "get", "modeldeployment", "iris")
        logs = cluster.kubectl("-n", NAMESPACE, "logs", f"deployment/{OPERATOR}").stdout
        assert "status" not in ignored, (ignored["status"], ignored["metadata"], logs[-6000:])
        assert not cluster.kubectl_json("-n", other, "get", "deployments")["items"]
    finally:
        install(cluster)
        cluster.kubectl("delete", "namespace", other, "--wait=false", check=False)
