"""The Helm chart's lifecycle on the test cluster, as one ordered test on one served canary (each step starts
from the state the one before left): the install serves a model in a restricted namespace without a Pod
Security warning and ``helm test`` passes; an upgrade under 20 req/s loses no request; the same release in
namespace scope serves its namespace and leaves another alone; an uninstall leaves nothing but the CRD, and a
fresh install follows. It changes the shared release: ``serial``."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from mlmodel_testing.cluster import Cluster
from mlmodel_testing.load import burst, call, constant_load
from mlmodel_testing.models import CANARY_EXAMPLE, deploy_model_store
from mlmodel_testing.release import (
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
from mlmodel_testing.status import is_true, router_digest, settled, wait_settled

pytestmark = pytest.mark.serial

UPGRADE_RATE = 20.0
RELEASE_KINDS = "deployments,replicasets,pods,services,serviceaccounts,configmaps,roles,rolebindings"
CLUSTER_KINDS = "clusterroles,clusterrolebindings"


def test_install_upgrade_namespace_scope_and_uninstall(
    cluster: Cluster, operator: None, namespace: str, models: Path
) -> None:
    restricted_namespace(cluster, namespace)
    try:
        _install_serves_a_model_with_no_pod_security_warning(cluster, namespace, models)
        _upgrade_under_load_fails_no_request(cluster, namespace)
        _namespace_scope_serves_only_its_namespaces(cluster, namespace)
    finally:
        install(cluster)
    _uninstall_leaves_nothing_but_the_crd(cluster, namespace)


def _install_serves_a_model_with_no_pod_security_warning(cluster: Cluster, namespace: str, models: Path) -> None:
    result = install(cluster)  # the release exists: an upgrade with the same values
    assert "PodSecurity" not in result.stderr, result.stderr
    deploy_model_store(cluster, namespace, models)
    cluster.kubectl("-n", namespace, "apply", "-f", str(CANARY_EXAMPLE))
    cluster.wait_until("iris to be Ready", lambda: is_true(cluster, namespace, "iris", "Ready"), 300, interval=2)
    with cluster.service_url(namespace, "iris", 80) as base:
        reply = cluster.wait_until("a prediction through the router", lambda: _predict(base), 60)
    assert reply["predictions"] == [0], reply
    # Everything the operator made runs under the restricted profile: no pod was refused.
    events = cluster.kubectl("-n", namespace, "get", "events", "-o", "json").stdout
    assert "violates PodSecurity" not in events
    pods = cluster.get("pods", namespace=namespace)["items"]
    apps = {p["metadata"]["labels"].get("app.kubernetes.io/name") for p in pods}
    assert {"mlmodel-server", "mlmodel-router"} <= apps, apps
    tested = helm(cluster, "test", RELEASE, "--namespace", NAMESPACE, timeout=300)
    assert re.search(r"Phase:\s+Succeeded", tested.stdout), tested.stdout


def _predict(base: str) -> Any:
    result = call(base)
    return json.loads(result.body) if result.status == 200 else None


def _upgrade_under_load_fails_no_request(cluster: Cluster, namespace: str) -> None:
    wait_settled(cluster, namespace)
    digest = router_digest(cluster, namespace)
    with cluster.service_url(namespace, "iris", 80) as base:
        # The load starts once only the current router answers: this measures the upgrade alone.
        cluster.wait_until(
            "every answer from the current router",
            lambda: all(r.status == 200 and r.config == digest for r in burst(base, 20)),
            60,
        )
    before = leader_pod(cluster)
    assert before is not None
    ready = f'mlmodel_operator_ready{{name="iris",namespace="{namespace}"}} 1.0'
    with (
        cluster.service_url(namespace, "iris", 80) as base,
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


def _namespace_scope_serves_only_its_namespaces(cluster: Cluster, namespace: str) -> None:
    """The same release in namespace scope: with only the Role in its namespace (and read access to CRDs
    and Namespaces), the operator serves a weight change there and leaves another namespace alone."""
    other = f"e2e-unwatched-{uuid.uuid4().hex[:6]}"
    restricted_namespace(cluster, other)
    try:
        install(cluster, "--set", "rbac.scope=namespace", "--set", f"watchNamespaces={{{namespace}}}")
        cluster.kubectl("-n", other, "apply", "-f", str(CANARY_EXAMPLE))
        weights = [{"op": "replace", "path": f"/spec/variants/{i}/weight", "value": 50} for i in (0, 1)]
        cluster.kubectl("-n", namespace, "patch", "md", "iris", "--type=json", "-p", json.dumps(weights))
        status = cluster.wait_until("the 50/50 split in effect", lambda: settled(cluster, namespace), 120)
        assert status["weights"] == "stable=50,canary=50", status
        with cluster.service_url(namespace, "iris", 80) as base:
            reply = cluster.wait_until("a prediction through the router", lambda: _predict(base), 60)
        assert reply["predictions"] == [0], reply
        ignored = cluster.get("modeldeployments", "iris", namespace=other)
        logs = cluster.kubectl("-n", NAMESPACE, "logs", f"deployment/{OPERATOR}").stdout
        assert "status" not in ignored, (ignored["status"], ignored["metadata"], logs[-6000:])
        assert not cluster.get("deployments", namespace=other)["items"]
    finally:
        cluster.kubectl("delete", "namespace", other, "--wait=false", check=False)


def _release_objects(cluster: Cluster) -> list[str]:
    selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/managed-by=Helm"
    names = []
    for args in (("get", "-A", RELEASE_KINDS), ("get", CLUSTER_KINDS)):
        out = cluster.kubectl(*args, "-l", selector, "-o", "name").stdout
        names += out.split()
    return names


def _uninstall_leaves_nothing_but_the_crd(cluster: Cluster, namespace: str) -> None:
    assert any(n.startswith("deployment") for n in _release_objects(cluster))
    try:
        helm(cluster, "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout", "3m")
        cluster.wait_until("the release's objects to go", lambda: not _release_objects(cluster), 120)
        crd = cluster.get("customresourcedefinitions", CRD)
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        # The ModelDeployment, and the model it serves, outlive the operator.
        assert cluster.get("modeldeployments", "iris", namespace=namespace)["metadata"]["name"] == "iris"
        assert helm(cluster, "status", RELEASE, "--namespace", NAMESPACE, check=False).returncode != 0
        # With no operator, deleting it finishes (it carries no finalizer), its children go with it,
        # and so does the namespace.
        cluster.kubectl("-n", namespace, "delete", "modeldeployment", "iris", "--timeout=60s", timeout=90)
        cluster.wait_until(
            "iris's children to be garbage-collected",
            lambda: (
                not cluster.kubectl(
                    "-n", namespace, "get", "deploy,svc", "-l", "app.kubernetes.io/instance=iris", "-o", "name"
                ).stdout.strip()
            ),
            60,
        )
        cluster.kubectl("delete", "namespace", namespace, "--timeout=120s", timeout=150)
        # A fresh install: every object is created anew, with no warning.
        fresh = install(cluster)
        assert "PodSecurity" not in fresh.stderr, fresh.stderr
    except BaseException:
        install(cluster)
        raise
