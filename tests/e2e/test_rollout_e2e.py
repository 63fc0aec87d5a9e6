"""Automated rollouts (``spec.rollout``) on real pods: ``manifests/examples/iris-rollout.yaml`` as it is, a new
model promoted through its steps under a steady load, then a model that fails to load aborted, and the previous
revision removed after ``scaleDownDelay``. The steps themselves, pure: ``operator/tests/test_rollout.py``.

Every request is a new connection with no retry (``load.call``); every number is asserted.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from mlmodel_testing.cluster import Cluster
from mlmodel_testing.load import Result, constant_load, summary
from mlmodel_testing.models import ROLLOUT_EXAMPLE, V1, V2, WRONG_DIGEST, deploy_model_store, digests
from mlmodel_testing.status import wait_settled

RATE = 50  # requests/s: about 1,000 at each step of the example (20 s each), to judge each share within 5 points
SHARE_POINTS = 5
PROMOTED_SECONDS = 180  # the example's promise: a good model promoted in under 3 minutes
SHARES = {"r1=80,r2=20": 20, "r1=50,r2=50": 50}  # X-Router-Weights at each setWeight -> revision 2's percent


def _rollout(cluster: Cluster, namespace: str) -> dict[str, Any]:
    found = cluster.kubectl_json("-n", namespace, "get", "md", "iris")
    return dict((found.get("status") or {}).get("rollout") or {})


def _set_model(cluster: Cluster, namespace: str, uri: str, sha: str) -> None:
    patch = [
        {"op": "replace", "path": "/spec/variants/0/modelUri", "value": uri},
        {"op": "replace", "path": "/spec/variants/0/modelSha256", "value": sha},
    ]
    cluster.kubectl("-n", namespace, "patch", "md", "iris", "--type=json", "-p", json.dumps(patch))


def _share(results: list[Result], weights: str) -> tuple[float, int]:
    """Revision 2's percent of the answers routed by ``weights``, and how many there were."""
    routed = [r for r in results if r.weights == weights]
    return (100 * sum(r.variant == "r2" for r in routed) / len(routed) if routed else 0.0), len(routed)


def test_the_example_promotes_a_good_model_by_its_steps_and_aborts_one_that_fails_to_load(
    cluster: Cluster, namespace: str, operator: None, models: Path
) -> None:
    deploy_model_store(cluster, namespace, models)
    cluster.kubectl("-n", namespace, "apply", "-f", str(ROLLOUT_EXAMPLE))
    first = wait_settled(cluster, namespace)
    assert (first["rollout"]["phase"], first["rollout"]["stableRevision"]) == ("Promoted", 1), first["rollout"]
    table = cluster.kubectl("-n", namespace, "get", "md", "iris").stdout
    assert "PHASE" in table and "Promoted" in table, table
    _, v2 = digests(models)
    with cluster.service_url(namespace, "iris", 80) as base, constant_load(base, RATE) as load:
        cluster.wait_until("traffic", lambda: len(load.results) > 100, 30)
        edited = time.monotonic()
        _set_model(cluster, namespace, V2, v2)
        cluster.wait_until(
            "revision 2 to be promoted",
            lambda: _rollout(cluster, namespace).get("stableRevision") == 2,
            PROMOTED_SECONDS,
            0.5,
        )
        promoted = time.monotonic() - edited
        cluster.kubectl("-n", namespace, "wait", "md/iris", "--for=condition=Promoted", "--timeout=10s")
        broken = time.monotonic()
        _set_model(cluster, namespace, V1, WRONG_DIGEST)  # revision 3: its model never loads
        cluster.wait_until(
            "revision 3 to be aborted",
            lambda: _rollout(cluster, namespace).get("phase") == "Aborted",
            120,
            0.5,
        )
        cluster.wait_until("answers after the abort", lambda: len(load.since(time.monotonic() - 5)) > 100, 30)
        results = list(load.results)
    assert all(r.status == 200 for r in results), summary(results)
    for weights, wanted in SHARES.items():
        share, count = _share(results, weights)
        assert count >= 200 and abs(share - wanted) <= SHARE_POINTS, (weights, share, count)
    assert promoted <= PROMOTED_SECONDS, promoted
    assert {r.variant for r in results if r.sent > broken} == {"r2"}  # revision 3 never got a request
    status = cluster.kubectl_json("-n", namespace, "get", "md", "iris")["status"]
    outcomes = [(r["revision"], r["outcome"]) for r in status["revisions"]]
    assert outcomes == [(1, "Promoted"), (2, "Promoted"), (3, "Aborted")], outcomes
    assert "ModelLoadFailed" in status["rollout"]["message"], status["rollout"]
    events = cluster.kubectl_json("-n", namespace, "get", "events", "--field-selector", "involvedObject.name=iris")
    reasons = {e["reason"] for e in events["items"]}
    assert {"RolloutStarted", "RolloutStep", "RolloutPaused", "RolloutPromoted", "RolloutAborted"} <= reasons, reasons
    # Revision 1 stayed up, with no traffic, for scaleDownDelay (30 s) after the promotion, then went.
    cluster.wait_until(
        "revision 1's Deployment to go",
        lambda: not cluster.kubectl("-n", namespace, "get", "deploy", "iris-r1", check=False).stdout,
        120,
    )
    print(f"\npromoted {promoted:.1f} s after the edit; shares {[_share(results, w) for w in SHARES]}")
