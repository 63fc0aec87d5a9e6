"""Automated rollouts (``spec.rollout``) on real pods, as ``make demo`` shows them (``mlmodel_demo.rollout``):
``manifests/examples/iris-rollout.yaml`` as it is, a new model promoted through its steps under a steady load,
undone at once while the previous revision is up, then a model that fails to load aborted, and the revision
undone removed after ``scaleDownDelay``; and the operator's leader killed mid-rollout and after an abort. The steps
themselves, pure: ``operator/tests/test_rollout.py``.

Every request is a new connection with no retry (``load.call``); every number is asserted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mlmodel_demo import rollout
from mlmodel_demo.steps import Steps
from mlmodel_testing.cluster import Cluster
from mlmodel_testing.load import summary
from mlmodel_testing.models import ROLLOUT_EXAMPLE, V1, V2, WRONG_DIGEST, deploy_model_store, digests
from mlmodel_testing.release import NAMESPACE, leader_metrics, leader_pod
from mlmodel_testing.status import wait_settled

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


@pytest.mark.serial  # kills the shared operator's leader
def test_the_leader_killed_mid_rollout_goes_on_at_the_same_step_and_an_abort_stays(
    cluster: Cluster, namespace: str, operator: None, models: Path
) -> None:
    """The leader is force-deleted while revision 2 pauses at step 2 of 4: the new leader goes on from that step
    (never back to step 0, one RolloutStarted) to the promotion. Then a model that does not load is aborted, the
    leader killed again, and the new one, once it has passed the ModelDeployment, keeps it aborted."""
    deploy_model_store(cluster, namespace, models)
    cluster.kubectl("-n", namespace, "apply", "-f", str(ROLLOUT_EXAMPLE))
    wait_settled(cluster, namespace, timeout=300)
    _, v2 = digests(models)
    rollout.set_model(cluster, namespace, V2, v2)
    paused = cluster.wait_until(
        "the first pause", lambda: _at(cluster, namespace, "Paused"), rollout.PROMOTED_SECONDS, 0.5
    )
    assert paused["currentStepIndex"] == 1 and paused["canaryRevision"] == 2, paused
    _kill_leader(cluster)
    seen: list[dict[str, Any]] = []

    def promoted() -> bool:
        seen.append(rollout.rollout_status(cluster, namespace))
        return seen[-1].get("stableRevision") == 2

    cluster.wait_until("revision 2 to be promoted by the new leader", promoted, rollout.PROMOTED_SECONDS, 0.5)
    steps = [s["currentStepIndex"] for s in seen if s.get("canaryRevision") == 2 and s["phase"] != "Promoted"]
    assert steps == sorted(steps) and min(steps, default=1) >= 1, steps  # never back to step 0
    assert _reasons(cluster, namespace).count("RolloutStarted") == 1

    rollout.set_model(cluster, namespace, V1, WRONG_DIGEST)
    cluster.wait_until("revision 3 to be aborted", lambda: _at(cluster, namespace, "Aborted"), 120, 0.5)
    _kill_leader(cluster)
    ready = f'mlmodel_operator_ready{{name="iris",namespace="{namespace}"}}'
    cluster.wait_until("the new leader to pass iris", lambda: ready in leader_metrics(cluster), 120, 1)
    after = rollout.rollout_status(cluster, namespace)
    assert (after["phase"], after["stableRevision"], after.get("canaryRevision")) == ("Aborted", 2, 3), after
    assert _reasons(cluster, namespace).count("RolloutStarted") == 2  # revision 2's, and revision 3's: no other


def _at(cluster: Cluster, namespace: str, phase: str) -> dict[str, Any] | None:
    found = rollout.rollout_status(cluster, namespace)
    return found if found.get("phase") == phase else None


def _kill_leader(cluster: Cluster) -> None:
    leader = cluster.wait_until("a leader", lambda: leader_pod(cluster), 60)
    cluster.kubectl("-n", NAMESPACE, "delete", "pod", leader, "--grace-period=0", "--force")


def _reasons(cluster: Cluster, namespace: str) -> list[str]:
    events = cluster.kubectl_json("-n", namespace, "get", "events", "--field-selector", "involvedObject.name=iris")
    return [e["reason"] for e in events["items"] for _ in range(e.get("count") or 1)]
