"""The operator in the cluster: a standby takes over from a killed leader, and once Ready, the
operator's passes write nothing (the example canary served: ``test_router_e2e``; a model with the
wrong digest: ``test_monitoring_e2e`` and ``test_faults_e2e``)."""

from __future__ import annotations

import functools
import json
import math
import re
import time
from collections import Counter
from pathlib import Path

import pytest
import soak
from mlmodel_testing.cluster import REPO, Cluster
from mlmodel_testing.models import V1, deploy_model_store, digests, md, variant
from mlmodel_testing.pods import post_predict
from mlmodel_testing.release import NAMESPACE, OPERATOR, leader_metrics, leader_pod, operator_pods
from mlmodel_testing.status import is_true, wait_settled
from prometheus_client.parser import text_string_to_metric_families

EXAMPLES = REPO / "manifests" / "examples"


TAKEOVER_SECONDS = 30  # issue 9: a standby takes over within 30 s of the leader's loss


@pytest.mark.serial  # kills the shared operator
def test_a_standby_takes_over_when_the_leader_dies_under_a_spec_change(
    cluster: Cluster, namespace: str, operator: None, models: Path
) -> None:
    """Two operator replicas: the leader is killed (no grace, so it cannot release the Lease) right
    after a spec change; the standby takes over within 30 s and the change converges, with no
    Event posted twice."""
    deploy_model_store(cluster, namespace, models)
    cluster.kubectl("-n", namespace, "apply", "-f", str(EXAMPLES / "iris-canary.yaml"))
    wait_settled(cluster, namespace)
    old = leader_pod(cluster)
    assert old is not None
    running = [p["metadata"]["name"] for p in operator_pods(cluster)]
    assert len(running) == 2 and old in running, running
    before = {e["metadata"]["name"] for e in cluster.get("events", namespace=namespace)["items"]}
    patch = [{"op": "replace", "path": f"/spec/variants/{i}/weight", "value": 50} for i in (0, 1)]
    cluster.kubectl("-n", namespace, "patch", "md", "iris", "--type=json", "-p", json.dumps(patch))
    killed = time.monotonic()
    cluster.kubectl("-n", NAMESPACE, "delete", "pod", old, "--grace-period=0", "--force")
    new = cluster.wait_until(
        "a standby to lead", lambda: (pod := leader_pod(cluster)) != old and pod, TAKEOVER_SECONDS, 0.5
    )
    took_over = time.monotonic() - killed
    status = wait_settled(cluster, namespace, timeout=120)
    assert status["weights"] == "stable=50,canary=50", status
    events = [e for e in cluster.get("events", namespace=namespace)["items"] if e["metadata"]["name"] not in before]
    ours = Counter((e["reason"], e["message"]) for e in events if e.get("reportingComponent") == "mlmodel-operator")
    assert ours and max(ours.values()) == 1, ours
    print(f"\nnew leader {new} {took_over:.1f} s after the old one was killed; events: {dict(ours)}")


# The kinds the operator writes, as apiserver_request_total names them (any subresource: status,
# scale). Leases are left out: the leader renews its Lease every 2 s, idle or not.
OPERATOR_KINDS = {
    "deployments",
    "services",
    "configmaps",
    "horizontalpodautoscalers",
    "poddisruptionbudgets",
    "modeldeployments",
}
WRITES = {"POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"}
IDLE_MODELS = 20  # the example canary and 19 single-variant ModelDeployments, all on real pods


def writes(cluster: Cluster) -> Counter[str]:
    """The write requests the API server has had to the operator's kinds, by anyone and in any
    namespace (the metric has no namespace), whatever their answer: by verb, resource, subresource."""
    found: Counter[str] = Counter()
    for family in text_string_to_metric_families(cluster.kubectl("get", "--raw", "/metrics").stdout):
        for sample in family.samples:
            verb, resource = sample.labels.get("verb"), sample.labels.get("resource")
            if sample.name == "apiserver_request_total" and verb in WRITES and resource in OPERATOR_KINDS:
                found[f"{verb} {resource}/{sample.labels.get('subresource', '')}"] += int(sample.value)
    return found


def events(cluster: Cluster, namespace: str) -> dict[str, tuple[str, str, str]]:
    """The namespace's Events, name -> (resourceVersion, reason, message): a new name is a POST, a
    new resourceVersion a PATCH (a repeat counted on an Event that exists), whoever wrote it."""
    items = cluster.get("events", namespace=namespace)["items"]
    return {e["metadata"]["name"]: (e["metadata"]["resourceVersion"], e["reason"], e["message"]) for e in items}


def resync_passes(cluster: Cluster) -> float:
    """The leader's resync passes so far, over every ModelDeployment it watches."""
    series = r'mlmodel_operator_reconciles_total\{trigger="resync"\} (\S+)'
    return sum(float(n) for n in re.findall(series, leader_metrics(cluster)))


def resync_seconds(cluster: Cluster) -> float:
    """The resync period the chart gave the operator (``resyncSeconds``, as RESYNC_SECONDS)."""
    deployment = cluster.get("deployments", OPERATOR, namespace=NAMESPACE)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return float(next(e["value"] for e in container["env"] if e["name"] == "RESYNC_SECONDS"))


def in_motion(cluster: Cluster) -> list[str]:
    """What would write to the operator's kinds without the operator: a namespace being deleted
    (its objects are), a Deployment whose status the controller has yet to bring up to date."""
    moving = [
        f"namespace {n['metadata']['name']} is being deleted"
        for n in cluster.get("namespaces")["items"]
        if n["metadata"].get("deletionTimestamp")
    ]
    for d in cluster.get("deployments")["items"]:
        status, replicas = d.get("status") or {}, d["spec"].get("replicas", 1)
        counts = [status.get(k, 0) for k in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas")]
        current = status.get("observedGeneration") == d["metadata"]["generation"]
        if not current or counts != [replicas] * 4 or status.get("terminatingReplicas"):
            where = f"{d['metadata']['namespace']}/{d['metadata']['name']}"
            moving.append(f"deployment {where}: replicas, updated, ready, available {counts} of {replicas}")
    return moving


def serving(cluster: Cluster, namespace: str) -> int:
    """The pods of ModelDeployment iris that are ready, if none of its pods is on its way in or out."""
    pods = cluster.get("pods", namespace=namespace, selector="app.kubernetes.io/instance=iris")["items"]
    ready = [
        p
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
        and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])
    ]
    return len(ready) if len(ready) == len(pods) else -1


# One small pod for each of the other 19: they all fit on the test node.
SMALL = {"requests": {"cpu": "10m", "memory": "96Mi"}, "limits": {"memory": "512Mi"}}


@pytest.mark.serial  # counts the writes of the whole cluster
def test_no_writes_at_idle(cluster: Cluster, namespace: str, operator: None, models: Path) -> None:
    """20 ModelDeployments, among them two variants and the router, on real pods that serve, Ready:
    then, over several resync periods (5 minutes under ``make test-soak``) in which the operator
    really runs its passes, nobody writes to the operator's kinds
    (apiserver_request_total, POST/PUT/PATCH/APPLY/DELETE on Deployments, Services, ConfigMaps,
    HPAs, PDBs and ModelDeployments with their status) and no Event of the namespace is posted or
    updated. The metric counts the whole cluster, so the window opens once nothing else is in
    motion, and nothing may change these kinds elsewhere meanwhile (the e2e tests run one by one)."""
    deploy_model_store(cluster, namespace, models)
    cluster.kubectl("-n", namespace, "apply", "-f", str(EXAMPLES / "iris-canary.yaml"))
    v1, _ = digests(models)
    small = [variant("v1", V1, v1, 100, resources=SMALL)]
    cluster.apply([md(namespace, small, name=f"idle-{k}") for k in range(1, IDLE_MODELS)])
    status = wait_settled(cluster, namespace)
    assert status["routing"] == "the router splits traffic: stable=90,canary=10", status
    for k in range(1, IDLE_MODELS):
        ready = functools.partial(is_true, cluster, namespace, f"idle-{k}", "Ready")
        cluster.wait_until(f"idle-{k} to be Ready", ready, 240)
    with cluster.service_url(namespace, "iris", 80) as base:
        body = cluster.wait_until("a prediction through iris", lambda: post_predict(base), 60)
    assert body["predictions"] == [0]
    cluster.wait_until(
        "stable, canary and two routers serving, and no other pod", lambda: serving(cluster, namespace) == 4, 60
    )
    cluster.wait_until("nothing else in motion", lambda: not in_motion(cluster), 180, interval=2)
    period, leader = resync_seconds(cluster), leader_pod(cluster)
    watched = len(cluster.get("modeldeployments")["items"])

    def rounds(count: int) -> float:
        """Wait for ``count`` more resync rounds, a pass over each ModelDeployment in each: the passes run."""
        start = resync_passes(cluster)
        end = cluster.wait_until(
            f"{count} resync rounds over {watched} ModelDeployments, every {period:.0f} s",
            lambda: (n := resync_passes(cluster)) >= start + count * watched and n,
            count * period * 1.2 + 30,
            interval=0.5,
        )
        return float(end) - start

    rounds(1)  # whatever the last pass of the rollout left to do, done
    count = max(soak.IDLE_ROUNDS, math.ceil(soak.IDLE_SECONDS / period))
    before, seen, started = writes(cluster), events(cluster, namespace), time.monotonic()
    passes = rounds(count)
    after, now, elapsed = writes(cluster), events(cluster, namespace), time.monotonic() - started
    assert leader_pod(cluster) == leader, "the leader changed: its passes were not all counted"
    assert len(cluster.get("modeldeployments")["items"]) == watched
    written = after - before
    assert not written, f"writes to the operator's kinds in {elapsed:.0f} s of idle: {dict(written)}"
    new = {name: found for name, found in now.items() if seen.get(name) != found}
    assert not new, f"Events posted or updated in {elapsed:.0f} s of idle: {new}"
    assert elapsed >= soak.IDLE_SECONDS and watched >= IDLE_MODELS
    print(
        f"\n{watched} ModelDeployments, {elapsed:.1f} s idle ({count} rounds of {period:.0f} s, {passes:.0f} passes), "
        "no write"
    )
