"""The operator in the cluster: a ModelDeployment with a canary becomes Ready and serves
predictions through its entry Service, from this host and from another pod; a model with the
wrong digest never becomes Ready and says why."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from release import NAMESPACE, leader_pod
from test_router_e2e import wait_settled
from test_server_deployment import IRIS_ROW, client_pod

from conftest import REPO, WRONG_DIGEST, Cluster, broken_model, condition, deploy_model_store, is_true

EXAMPLES = REPO / "manifests" / "examples"


def predict(base: str) -> tuple[dict[str, Any], str]:
    request = urllib.request.Request(
        f"{base}/predict",
        data=json.dumps({"instances": [IRIS_ROW]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read()), reply.headers["X-Model-Variant"]


def test_canary_serves_and_a_bad_model_is_degraded(
    cluster: Cluster, namespace: str, operator: None, models: Path, server_image: str
) -> None:
    deploy_model_store(cluster, namespace, models)
    cluster.kubectl("-n", namespace, "apply", "-f", str(EXAMPLES / "iris-canary.yaml"))

    ready = cluster.wait_until(
        "iris to be Ready", lambda: is_true(cluster, namespace, "iris", "Ready"), 300, interval=2
    )
    assert ready["reason"] == "AllVariantsReady"
    table = cluster.kubectl("-n", namespace, "get", "modeldeployments").stdout
    assert "stable=90,canary=10" in table and "2/2" in table, table

    # From this host, through the entry Service (the router), and through the canary's own Service.
    with cluster.service_url(namespace, "iris", 80) as base:
        body, variant = cluster.wait_until("a prediction through iris", lambda: predict(base), 60)
    assert body["predictions"] == [0] and variant in ("stable", "canary")
    with cluster.service_url(namespace, "iris-canary", 80) as base:
        body, variant = cluster.wait_until("a prediction through iris-canary", lambda: predict(base), 60)
    assert body["predictions"] == [0] and variant == "canary"

    # From another pod, by DNS name.
    cluster.apply(client_pod(namespace, server_image, f"http://iris.{namespace}.svc.cluster.local/predict"))

    def client_result() -> dict[str, Any] | None:
        phase = cluster.kubectl("-n", namespace, "get", "pod", "dns-client", "-o", "jsonpath={.status.phase}").stdout
        logs = cluster.kubectl("-n", namespace, "logs", "dns-client", check=False).stdout
        assert phase != "Failed", f"client pod failed:\n{logs}"
        line = next((ln for ln in logs.splitlines() if ln.startswith("RESULT ")), None)
        return json.loads(line.removeprefix("RESULT ")) if phase == "Succeeded" and line else None

    assert cluster.wait_until("the in-cluster client", client_result, 180, interval=2)["predictions"] == [0]

    # A model whose digest does not match: Degraded, with both digests, and never Ready.
    cluster.apply(broken_model(namespace))
    degraded = cluster.wait_until(
        "broken to be Degraded", lambda: is_true(cluster, namespace, "broken", "Degraded"), 240, interval=2
    )
    real = hashlib.sha256((models / "iris.joblib").read_bytes()).hexdigest()
    assert degraded["reason"] == "ModelLoadFailed", degraded
    assert WRONG_DIGEST in degraded["message"] and real in degraded["message"], degraded
    ready_condition = condition(cluster, namespace, "broken", "Ready")
    assert ready_condition is not None and ready_condition["status"] == "False"
    assert ready_condition["reason"] == "ModelLoadFailed"


TAKEOVER_SECONDS = 30  # issue 9: a standby takes over within 30 s of the leader's loss


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
    pods = cluster.kubectl_json("-n", NAMESPACE, "get", "pods", "-l", "app.kubernetes.io/component=operator")
    running = [p["metadata"]["name"] for p in pods["items"] if not p["metadata"].get("deletionTimestamp")]
    assert len(running) == 2 and old in running, running
    before = {e["metadata"]["name"] for e in cluster.kubectl_json("-n", namespace, "get", "events")["items"]}
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
    events = [
        e
        for e in cluster.kubectl_json("-n", namespace, "get", "events")["items"]
        if e["metadata"]["name"] not in before
    ]
    ours = Counter((e["reason"], e["message"]) for e in events if e.get("reportingComponent") == "mlmodel-operator")
    assert ours and max(ours.values()) == 1, ours
    print(f"\nnew leader {new} {took_over:.1f} s after the old one was killed; events: {dict(ours)}")
