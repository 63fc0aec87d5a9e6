"""A rollout judged by the model's own answers, on real pods: ``manifests/examples/iris-shadow-rollout.yaml`` as it
is, under a steady load through the entry Service. A model fitted on shuffled labels (a 200 for every request, and
wrong) is aborted in the shadow step, by the agreement of its answers with the serving model's, and never answers a
client; iris-v2 (another seed, more trees) agrees, goes live and is promoted. The comparison itself, row by row in
each protocol: ``server/tests/test_agreement.py``; through a real nginx: ``operator/tests/test_router_shadow.py``;
the steps: ``operator/tests/test_analysis.py``.

Every request is a new connection with no retry (``load.call``); every number is asserted.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from mlmodel_demo import rollout
from mlmodel_testing.cluster import Cluster
from mlmodel_testing.load import IRIS_MIX, constant_load, summary
from mlmodel_testing.models import SHADOW_EXAMPLE, SHUFFLED, V2, deploy_model_store, digest
from mlmodel_testing.status import event_messages, wait_settled

RATE = 10  # requests/s: 100 copies an interval, 5 times the example's minRequests
INTERVAL = 10  # the example's analysis interval, in seconds
SHADOW_SECONDS = 20  # its shadow step's duration
PROMOTED_SECONDS = 240  # the promise: a good model promoted in under 4 minutes, no person acting
ROUTERS_SECONDS = 2  # from the promotion in the status to the routers' last answer of another revision


@pytest.mark.long
def test_the_shadow_example_aborts_a_model_that_disagrees_before_it_answers_anyone_and_promotes_one_that_agrees(
    cluster: Cluster, namespace: str, operator: None, models: Path
) -> None:
    deploy_model_store(cluster, namespace, models)
    cluster.kubectl("-n", namespace, "apply", "-f", str(SHADOW_EXAMPLE))
    wait_settled(cluster, namespace, timeout=300)
    with cluster.service_url(namespace, "iris", 80) as base, constant_load(base, RATE, IRIS_MIX) as load:
        cluster.wait_until("traffic", lambda: len(load.results) > 20, 30)
        shuffled = rollout.change(
            cluster, namespace, (SHUFFLED, digest(models, SHUFFLED)), {"canaryRevision": 2, "phase": "Aborted"}, 180
        )
        judged = rollout.rollout_status(cluster, namespace)["analysis"]
        edited = time.monotonic()
        rollout.set_model(cluster, namespace, V2, digest(models, V2))
        rollout.wait_for(cluster, namespace, {"canaryRevision": 3, "canaryWeight": 50}, PROMOTED_SECONDS)
        live = rollout.rollout_status(cluster, namespace)["analysis"]["lastInterval"]
        rollout.wait_for(cluster, namespace, {"stableRevision": 3}, PROMOTED_SECONDS)
        promoted = time.monotonic() - edited
        settled = edited + promoted + ROUTERS_SECONDS
        cluster.wait_until("answers after the promotion", lambda: len(load.since(settled)) > 20, 30)
        results = list(load.results)
    assert not [r for r in results if r.status != 200], summary(results)
    # iris-shuffled (revision 2): aborted in its first judged interval, before any client request reached it.
    assert not [r for r in results if r.variant == "r2"], summary([r for r in results if r.variant == "r2"])
    assert shuffled <= SHADOW_SECONDS + 3 * INTERVAL, shuffled  # its pod's start, and one interval of copies
    failed = judged["lastInterval"]
    assert (failed["result"], failed["requests"]) == ("Failed", 0) and failed["compared"] >= 20, failed
    agreement = next(m for m in failed["metrics"] if m["name"] == "agreement")
    assert agreement["value"] < 0.5 and agreement["passed"] is False, agreement  # it agrees on 0 of the 3 flowers
    aborts = event_messages(cluster, namespace, "RolloutAborted")
    assert any(
        "revision 2 failed its analysis: agreement 0" in m and "(threshold >= 0.95 of rows)" in m for m in aborts
    )
    # iris-v2 (revision 3): its shadow interval agreed (every flower of the load), then live and promoted.
    agreed = next(m for m in live["metrics"] if m["name"] == "agreement")
    assert live["result"] == "Passed" and live["compared"] >= 20 and agreed["value"] >= 0.95, live
    assert promoted <= PROMOTED_SECONDS, promoted
    assert {r.variant for r in results if r.sent > settled} == {"r3"}
    status = cluster.get("modeldeployments", "iris", namespace=namespace)["status"]
    outcomes = [(r["revision"], r["outcome"]) for r in status["revisions"]]
    assert outcomes == [(1, "Promoted"), (2, "Aborted"), (3, "Promoted")], outcomes
    print(f"\niris-shuffled aborted {shuffled:.0f} s after the edit, agreement {agreement['value']}; iris-v2 promoted")
    print(f"{promoted:.0f} s after its edit, agreement {agreed['value']} over {live['compared']} copies")
