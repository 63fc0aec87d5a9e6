"""Automated rollouts (``spec.rollout``) on real pods, as ``make demo`` shows them (``mlmodel_demo.rollout``):
``manifests/examples/iris-rollout.yaml`` as it is, a new model promoted through its steps under a steady load,
undone at once while the previous revision is up, then a model that fails to load aborted, and the revision
undone removed after ``scaleDownDelay``. The steps
themselves, pure: ``operator/tests/test_rollout.py``.

Every request is a new connection with no retry (``load.call``); every number is asserted.
"""

from __future__ import annotations

from pathlib import Path

from mlmodel_demo import rollout
from mlmodel_demo.steps import Steps
from mlmodel_testing.cluster import Cluster
from mlmodel_testing.load import summary
from mlmodel_testing.models import deploy_model_store

SHARE_POINTS = 5
UNDO_SECONDS = 4  # from the edit that undoes a promotion to the last answer of the revision undone


def test_the_example_promotes_a_good_model_by_its_steps_and_aborts_one_that_fails_to_load(
    cluster: Cluster, namespace: str, operator: None, models: Path, tmp_path: Path
) -> None:
    deploy_model_store(cluster, namespace, models)
    outcome = rollout.run(Steps(workdir=tmp_path), cluster, namespace, models)
    assert outcome.failed == 0, summary(outcome.results)
    for weights, wanted in rollout.SHARES.items():
        got, count = outcome.shares[weights]
        assert count >= 200 and abs(got - wanted) <= SHARE_POINTS, (weights, got, count)
    assert outcome.promoted_seconds <= rollout.PROMOTED_SECONDS, outcome.promoted_seconds
    # The undo: the kubectl patch, the operator's watch and pass, and the routers' poll.
    assert outcome.undo_seconds <= UNDO_SECONDS, outcome.undo_seconds
    assert {r.variant for r in outcome.results if r.sent > outcome.broken_at} == {"r1"}  # 3 never answered
    status = cluster.kubectl_json("-n", namespace, "get", "md", "iris")["status"]
    outcomes = [(r["revision"], r["outcome"]) for r in status["revisions"]]
    assert outcomes == [(1, "Promoted"), (2, "Promoted"), (3, "Aborted")], outcomes
    assert "ModelLoadFailed" in status["rollout"]["message"], status["rollout"]
    assert next(c for c in status["conditions"] if c["type"] == "Promoted")["status"] == "False"
    table = cluster.kubectl("-n", namespace, "get", "md", "iris").stdout
    assert "PHASE" in table and "Aborted" in table, table
    events = cluster.kubectl_json("-n", namespace, "get", "events", "--field-selector", "involvedObject.name=iris")
    reasons = {e["reason"] for e in events["items"]}
    expected = {"RolloutStarted", "RolloutStep", "RolloutPaused", "RolloutPromoted", "RolloutUndone", "RolloutAborted"}
    assert expected <= reasons, reasons
    # Revision 2 stayed up, with no traffic, for scaleDownDelay (30 s) after the undo, then went.
    cluster.wait_until(
        "revision 2's Deployment to go",
        lambda: not cluster.kubectl("-n", namespace, "get", "deploy", "iris-r2", check=False).stdout,
        120,
    )
    print(f"\n{rollout.report(outcome)}")
