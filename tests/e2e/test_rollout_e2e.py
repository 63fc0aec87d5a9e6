"""Automated rollouts (``spec.rollout``) on real pods, as ``make demo`` shows them (``mlmodel_demo.rollout``):
``manifests/examples/iris-rollout.yaml`` as it is, a new model promoted through its steps under a steady load,
undone at once while the previous revision is up, a model that answers 500 for most inputs aborted by the
example's analysis, a model that fails to load aborted, and the revision undone removed after ``scaleDownDelay``;
on a quiet cluster, every rollout command of ``kubectl mlmodel`` moving the traffic for a user with only ``edit``,
and a model that answers right but 20 times slower aborted by the latency gate; and the operator's leader killed
mid-rollout and after an abort. The steps and the analysis themselves, pure: ``operator/tests/test_rollout.py`` and
``test_analysis.py``; the analysis of a real nginx's counts: ``test_router_nginx.py``.

Every request is a new connection with no retry (``load.call``); every number is asserted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mlmodel_demo import rollout
from mlmodel_demo.steps import Steps
from mlmodel_testing.cluster import Cluster
from mlmodel_testing.load import IRIS_MIX, Load, Result, call, constant_load, summary
from mlmodel_testing.models import ROLLOUT_EXAMPLE, SLOW, V1, V2, WRONG_DIGEST, deploy_model_store, digest, digests
from mlmodel_testing.prometheus import dashboard_queries, query, serve
from mlmodel_testing.release import NAMESPACE, leader_metrics, leader_pod
from mlmodel_testing.status import event_messages, router_pods, wait_settled

SHARE_POINTS = 5
UNDO_SECONDS = 2  # from `kubectl mlmodel undo`'s patch (as it returns) to the last answer of the revision undone
BACK_SECONDS = 2  # from the abort seen in the status to the last answer of the revision aborted
MOVED_SECONDS = 2  # from a plugin command's return (the operator has acted) to the last answer by the old split
INTERVAL = 10  # the example's analysis interval, in seconds
SLOW_RATE = 20  # requests/s while the slow model rolls out


@pytest.fixture
def prometheus(cluster: Cluster, tmp_path: Path) -> Iterator[str]:
    """A real Prometheus scraping the cluster (the operator too): its base URL."""
    (tmp_path / "prometheus").mkdir()
    with serve(cluster, tmp_path / "prometheus") as base:
        yield base


@pytest.mark.long
def test_the_example_promotes_a_good_model_and_aborts_a_failing_and_a_broken_one(
    cluster: Cluster, namespace: str, operator: None, models: Path, tmp_path: Path
) -> None:
    deploy_model_store(cluster, namespace, models)
    outcome = rollout.run(Steps(workdir=tmp_path), cluster, namespace, models)
    for weights, wanted in rollout.SHARES.items():
        got, count = outcome.shares[weights]
        assert count >= 200 and abs(got - wanted) <= SHARE_POINTS, (weights, got, count)
    assert outcome.promoted_seconds <= rollout.PROMOTED_SECONDS, outcome.promoted_seconds
    # The undo (kubectl mlmodel undo): the operator's watch and pass, and the routers' poll.
    assert outcome.undo_seconds <= outcome.undo_command_seconds + UNDO_SECONDS, outcome
    # iris-5xx (revision 3): aborted by its success rate within 2 intervals of its first answer, and the only
    # failed requests are its answers until the routers have the abort (BACK_SECONDS after the status says it).
    failing = outcome.failing
    answered = [r.sent for r in outcome.results if r.variant == "r3"]
    assert failing.aborted - min(answered) <= 2 * INTERVAL + 2, (failing, min(answered))
    assert failing.last_answer is None or failing.last_answer <= BACK_SECONDS, failing
    assert outcome.failed and {(r.variant, r.status) for r in outcome.failed} == {("r3", 500)}, summary(outcome.results)
    assert max(r.sent for r in outcome.failed) <= failing.aborted + BACK_SECONDS, summary(outcome.failed)
    print(f"\n{len(outcome.failed)} requests failed, all answered by iris-5xx before the routers had its abort")
    assert {r.variant for r in outcome.results if r.sent > outcome.broken.edited} == {"r1"}  # 4 never answered
    aborts = event_messages(cluster, namespace, "RolloutAborted")
    assert any("revision 3 failed its analysis: successRate" in m and "(threshold >= 95 %)" in m for m in aborts), (
        aborts
    )
    status = cluster.get("modeldeployments", "iris", namespace=namespace)["status"]
    outcomes = [(r["revision"], r["outcome"]) for r in status["revisions"]]
    assert outcomes == [(1, "Promoted"), (2, "Promoted"), (3, "Aborted"), (4, "Aborted")], outcomes
    assert next(c for c in status["conditions"] if c["type"] == "Promoted")["status"] == "False"
    table = cluster.kubectl("-n", namespace, "get", "md", "iris").stdout
    assert "PHASE" in table and "Aborted" in table, table
    reasons = set(_reasons(cluster, namespace))
    expected = {"RolloutStarted", "RolloutStep", "RolloutPaused", "RolloutPromoted", "RolloutUndone", "RolloutAborted"}
    assert expected | {"AnalysisFailed"} <= reasons, reasons
    # Revision 2 stayed up, with no traffic, for the example's scaleDownDelay (60 s) after the undo, then went.
    cluster.wait_until(
        "revision 2's Deployment to go",
        lambda: not cluster.kubectl("-n", namespace, "get", "deploy", "iris-r2", check=False).stdout,
        120,
    )
    print(f"\n{rollout.report(outcome)}")


@pytest.mark.serial  # its bounds hold on a quiet cluster: a model that takes 100 ms of CPU a row, 2 s per command
def test_each_plugin_command_moves_traffic_within_2_s_for_an_edit_user_and_a_slow_model_aborts_in_2_intervals(
    cluster: Cluster, namespace: str, operator: None, models: Path, tmp_path: Path, prometheus: str
) -> None:
    """The example under 20 requests/s, every command of ``kubectl mlmodel`` run by a user with only ``edit`` in the
    namespace: iris-v2 (revision 2) paused and resumed in its first pause, promoted to its next step, aborted,
    retried and at once promoted (``--full``), which waits for its pods to start again; ``status`` and ``history``
    show it; ``undo --to-revision 1`` while revision 1 is still up. Each move is in effect on every router within
    ``MOVED_SECONDS`` of the command's return (which is when the operator has acted on it), or of the promotion.
    Then iris-slow (revision 3: right answers, 20 times slower) is aborted by its p99 latency ratio within 2
    intervals of its first answer, and the dashboard's rollout row shows it from a real Prometheus. Not one request
    fails, the router's pods are the same throughout (revisions come and go in its routes, not its configuration),
    and a ``kubectl port-forward svc/iris`` held open through it all answers after every command and at the end.
    ``set-weight``: ``test_router_e2e.py``; each command's
    refusals: ``operator/tests/integration/test_kubectl_plugin.py``."""
    deploy_model_store(cluster, namespace, models)
    cluster.kubectl("-n", namespace, "apply", "-f", str(ROLLOUT_EXAMPLE))
    wait_settled(cluster, namespace, timeout=300)
    editor = cluster.as_user(namespace, "edit", tmp_path)  # a ServiceAccount bound to edit in the namespace only
    _, v2 = digests(models)
    pods = router_pods(cluster, namespace)
    forwarded: list[Result] = []
    with (
        cluster.service_url(namespace, "iris", 80) as base,
        cluster.port_forward(namespace, "iris", 80) as forward,
        constant_load(base, SLOW_RATE, IRIS_MIX) as load,
    ):
        cluster.wait_until("traffic", lambda: len(load.results) > 20, 30)
        moved = _commands(cluster, namespace, editor, load, v2, lambda: forwarded.append(call(forward)))
        slow = rollout.rollback(cluster, namespace, (SLOW, digest(models, SLOW)), 3, load.results)
        forwarded.append(call(forward))
        results = list(load.results)
    assert not [r for r in results if r.status != 200], summary(results)
    assert len(forwarded) == 5 and not [r for r in forwarded if r.status != 200], summary(forwarded)
    assert router_pods(cluster, namespace) == pods
    print(f"the last answer by the old split after each command's return (s): {moved}")
    assert max(moved.values()) <= MOVED_SECONDS, moved
    answered = [r.sent for r in results if r.variant == "r3"]
    assert answered, summary(results)
    print(f"iris-slow aborted by its p99 latency {slow.aborted - min(answered):.1f} s after its first answer")
    assert slow.aborted - min(answered) <= 2 * INTERVAL + 2, (slow, min(answered))
    assert slow.last_answer is None or slow.last_answer <= BACK_SECONDS, slow
    aborts = event_messages(cluster, namespace, "RolloutAborted")
    ratio = "revision 3 failed its analysis: p99LatencyRatio"
    assert any(ratio in m and "(threshold <= 4x the stable revision's)" in m for m in aborts), aborts
    analysis = rollout.rollout_status(cluster, namespace)["analysis"]
    assert analysis["failedIntervals"] == 2 and analysis["lastInterval"]["result"] == "Failed", analysis
    # The dashboard's rollout row has data for this rollout, from a real Prometheus scraping the operator.
    panels = dashboard_queries(namespace, rollout=True)
    assert len(panels) == 5, panels
    cluster.wait_until("the rollout panels' data", lambda: all(query(prometheus, e) for e in panels.values()), 60, 5)
    phases = {r["metric"]["phase"]: r["value"][1] for r in query(prometheus, panels["Rollout phase A"])}
    assert phases == {"Aborted": "1"}, phases
    gates = {r["metric"]["metric"] for r in query(prometheus, panels["Analysis: each gate's value A"])}
    assert gates == {"successRate", "p99LatencyRatio"}, gates


def _commands(
    cluster: Cluster, namespace: str, editor: Cluster, load: Load, v2: str, forward: Callable[[], None]
) -> dict[str, float]:
    """Revision 2 (iris-v2) moved by each rollout command in turn, as ``editor``: for each move, the seconds from
    the command's return to the last answer routed by what it ended. ``forward`` is called after each move."""
    moved: dict[str, float] = {}
    took: dict[str, float] = {}  # each command, from its start to its return (an action: the operator took it)

    def command(*args: str) -> tuple[float, str]:
        started = time.monotonic()
        out = editor.mlmodel(*args).stdout
        returned = time.monotonic()
        took[" ".join(args[:1] + args[2:])] = returned - started
        return returned, out

    def last(label: str, since: float, old: Callable[[Result], bool], new: Callable[[Result], bool]) -> None:
        cluster.wait_until(f"{label}: answers by the new split", lambda: sum(map(new, load.since(since))) > 20, 60)
        moved[label] = max((r.sent for r in load.since(since) if old(r)), default=since) - since
        forward()

    rollout.set_model(cluster, namespace, V2, v2)
    cluster.wait_until("revision 2's first pause", lambda: _at(cluster, namespace, "Paused"), 120, 0.5)
    _, out = command("pause", "iris")
    assert "paused by kubectl mlmodel pause with revision 2 at 20 %" in out, out
    assert rollout.rollout_status(cluster, namespace)["paused"] is True
    command("resume", "iris")
    assert "paused" not in rollout.rollout_status(cluster, namespace)
    done, out = command("promote", "iris")  # the pause under way ends: the next step sets 50 %
    assert out.startswith("iris: promote revision 2:"), out
    last("promote", done, lambda r: r.weights == "r1=80,r2=20", lambda r: r.weights == "r1=50,r2=50")
    done, out = command("abort", "iris")
    assert "all traffic is back on revision 1" in out, out
    last("abort", done, lambda r: r.variant == "r2", lambda r: r.variant == "r1")
    done, out = command("retry", "iris")  # from step 0: revision 2's pods start again
    assert out.startswith("iris: retry revision 2:"), out
    # At once, while they start: the promotion waits for them (no request fails meanwhile), then takes effect.
    _, out = command("promote", "iris", "--full")
    assert out.startswith("iris: promote-full revision 2:"), out
    rollout.wait_for(cluster, namespace, {"phase": "Promoted", "stableRevision": 2}, 120)
    last(
        "promote --full (from the promotion)",
        time.monotonic(),
        lambda r: r.variant == "r1",
        lambda r: r.variant == "r2",
    )
    editor.kubectl("wait", "md/iris", "--for=condition=Promoted", "--timeout=10s")
    shown = command("status", "iris")[1]
    assert "Phase:      Promoted" in shown and "REVISION" in shown, shown
    history = command("history", "iris")[1].splitlines()
    rows = [(row.split()[0], row.split()[-1]) for row in history[1:]]
    assert rows == [("1", "Promoted"), ("2", "Promoted")], history
    done, out = command("undo", "iris", "--to-revision", "1")
    assert "revision 1's spec applied again" in out, out
    rollout.wait_for(cluster, namespace, {"stableRevision": 1}, 30)
    last("undo --to-revision 1", done, lambda r: r.variant == "r2", lambda r: r.variant == "r1")
    print(f"\neach command's time (s): { {k: round(v, 1) for k, v in took.items()} }")
    return moved


@pytest.mark.serial  # kills the shared operator's leader
def test_the_leader_killed_mid_rollout_goes_on_at_the_same_step_and_an_abort_stays(
    cluster: Cluster, namespace: str, operator: None, models: Path
) -> None:
    """Under 20 requests/s, the leader is force-deleted while revision 2 pauses at step 2 of 4: the new leader goes
    on from that step (never back to step 0, one RolloutStarted, the analysis judging on) to the promotion. Then a
    model that does not load is aborted, the leader killed again, and the new one, once it has passed the
    ModelDeployment, keeps it aborted. Not one request fails."""
    deploy_model_store(cluster, namespace, models)
    cluster.kubectl("-n", namespace, "apply", "-f", str(ROLLOUT_EXAMPLE))
    wait_settled(cluster, namespace, timeout=300)
    _, v2 = digests(models)
    with cluster.service_url(namespace, "iris", 80) as base, constant_load(base, SLOW_RATE, IRIS_MIX) as load:
        _kill_mid_rollout(cluster, namespace, v2)
        results = list(load.results)
    assert len(results) > 1000 and not [r for r in results if r.status != 200], summary(results)


def _kill_mid_rollout(cluster: Cluster, namespace: str, v2: str) -> None:
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
    # The analysis went on under the new leader: intervals judged on the traffic (and passed: it was promoted).
    judged = seen[-1]["analysis"]
    assert judged["passedIntervals"] >= 1, judged

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
    events = cluster.get("events", namespace=namespace, fields="involvedObject.name=iris")
    return [e["reason"] for e in events["items"] for _ in range(e.get("count") or 1)]
