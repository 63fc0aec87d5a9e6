"""A rollout's passes, pure: each pass plans from the status the last one wrote (as after a restart)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from mlmodel_operator import names, render, rollout, spec
from mlmodel_operator.analysis import Snapshot
from test_render import SHA, SMALL_SERVERS, defaults, resource

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ROLLOUT = {"steps": [{"setWeight": 20}, {"pause": {"duration": "10s"}}, {"setWeight": 50}], "scaleDownDelay": "30s"}
V2 = "https://models.example.com/iris/v2.joblib"


def body(uri: str = "https://models.example.com/iris/v1.joblib", plan: Mapping[str, Any] = ROLLOUT) -> dict[str, Any]:
    variant = {"name": "stable", "modelUri": uri, "modelSha256": SHA, "replicas": 2}
    return resource(variants=[variant], rollout=plan)


class Passes:
    """Passes of one ModelDeployment: the status each writes is the next one's ``before``, and the routers' counts
    at the start of the analysis's interval are kept between them as the operator keeps them."""

    def __init__(self, plan: Mapping[str, Any] = ROLLOUT) -> None:
        self.plan = plan
        self.status: dict[str, Any] = {}
        self.events: list[str] = []
        self.messages: list[str] = []
        self.baseline: rollout.Baseline | None = None

    @staticmethod
    def at(seconds: float) -> str:
        return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S+00:00")

    def run(
        self,
        uri: str,
        at: float,
        observed: Mapping[str, tuple[int, str | None]] | None = None,
        counts: Snapshot | None = None,
        action: str | None = None,
    ) -> rollout.Plan:
        raw = body(uri, self.plan)
        if action is not None:
            raw["metadata"]["annotations"] = {names.ANNOTATION_ROLLOUT_ACTION: action}
        md = spec.parse(raw, default_image="mlmodel-server:0.1.0")
        readings = rollout.Readings(self.baseline, lambda: counts or {})
        plan = rollout.plan(md, raw["spec"]["variants"][0], self.status, observed or {}, self.at(at), readings)
        self.baseline = plan.baseline
        computed = {"conditions": [], "variants": [{"name": v.name, "readyReplicas": 1} for v in plan.md.variants]}
        self.status = rollout.with_rollout(plan, computed, self.status.get("conditions") or [], self.at(at))
        self.events += [reason for _, reason, _ in plan.events]
        self.messages += [message for _, _, message in plan.events]
        return plan


def served(plan: rollout.Plan) -> dict[str, int]:
    return {v.name: v.weight for v in plan.md.variants}


def promoted(status: dict[str, Any]) -> str:
    return str(next(c["status"] for c in status["conditions"] if c["type"] == "Promoted"))


def test_a_new_model_goes_through_the_steps_is_promoted_and_the_previous_revision_goes_after_the_delay() -> None:
    passes = Passes()
    first = passes.run("https://models.example.com/iris/v1.joblib", 0)
    assert served(first) == {"r1": 100} and first.md.routing.always
    assert passes.status["rollout"]["phase"] == "Promoted" and promoted(passes.status) == "True"
    # A new model: revision 2 starts beside revision 1, at 0 % until a pass has seen its pods.
    started = passes.run(V2, 5)
    assert served(started) == {"r1": 100, "r2": 0} and started.wake == 1.0
    assert passes.status["rollout"]["canaryRevision"] == 2 and promoted(passes.status) == "False"
    waiting = passes.run(V2, 6, {"r1": (2, None), "r2": (0, None)})
    assert served(waiting) == {"r1": 100, "r2": 0} and "waiting for revision 2 to be ready" in waiting.state.message
    # Ready, but a router pod has not reported routes that reach it yet: the step waits, and says for what.
    unreached = passes.run(V2, 6, {"r1": (2, None), "r2": (1, None), rollout.ROUTER: (0, None)})
    assert served(unreached) == {"r1": 100, "r2": 0}
    assert unreached.state.message == "step 1/3: waiting for every router pod to reach revision 2"
    named = passes.run(V2, 6, {"r1": (2, None), "r2": (1, None), rollout.ROUTER: (0, "iris-router-a, iris-router-b")})
    assert named.state.message == "step 1/3: waiting for router pods iris-router-a, iris-router-b to reach revision 2"
    stepped = passes.run(V2, 7, {"r1": (2, None), "r2": (1, None)})
    assert served(stepped) == {"r1": 80, "r2": 20}
    assert passes.status["rollout"]["phase"] == "Paused" and stepped.wake == 10.0
    assert passes.status["rollout"]["step"] == "1/3"
    assert passes.run(V2, 12, {"r1": (2, None), "r2": (1, None)}).wake == 5.0  # the pause goes on
    done = passes.run(V2, 17, {"r1": (2, None), "r2": (1, None)})
    assert served(done) == {"r2": 100, "r1": 0}  # revision 1 stays up, with no traffic, for scaleDownDelay
    assert done.wake == 30.0 and promoted(passes.status) == "True"
    assert [r["outcome"] for r in passes.status["revisions"]] == ["Promoted", "Promoted"]
    assert served(passes.run(V2, 47, {"r2": (2, None), "r1": (2, None)})) == {"r2": 100}
    assert passes.events == [
        "RevisionPromoted",
        "RolloutStarted",
        "RolloutStep",
        "RolloutPaused",
        "RolloutStep",
        "RolloutPromoted",
    ]


def test_every_revision_gets_the_operators_default_resources() -> None:
    """A revision's variant is parsed again from what it recorded, which holds no default: the operator's
    (--server-resources) apply to every revision in play, as they apply to a variant."""
    raw = body("file:///m/v1.joblib")  # read in place: no ephemeral-storage request
    md = spec.parse(raw, default_image="mlmodel-server:0.1.0", defaults=defaults())
    first = rollout.plan(md, raw["spec"]["variants"][0], {}, {}, Passes.at(0))
    (deployment,) = [o for o in render.variant_children(first.md) if o["kind"] == "Deployment"]
    assert deployment["metadata"]["name"] == "iris-r1"
    assert deployment["spec"]["template"]["spec"]["containers"][0]["resources"] == SMALL_SERVERS


def test_a_failing_canary_is_aborted_stays_so_and_a_revert_or_a_new_spec_moves_on() -> None:
    passes = Passes()
    passes.run("https://models.example.com/iris/v1.joblib", 0)
    passes.run(V2, 1)
    assert served(passes.run(V2, 2, {"r1": (2, None), "r2": (1, None)})) == {"r1": 80, "r2": 20}
    aborted = passes.run(V2, 3, {"r1": (2, None), "r2": (0, "ModelLoadFailed: digest mismatch")})
    assert served(aborted) == {"r1": 100}
    assert passes.status["rollout"]["phase"] == "Aborted" and "digest mismatch" in aborted.state.message
    assert passes.events[-1] == "RolloutAborted"
    assert served(passes.run(V2, 60, {"r1": (2, None)})) == {"r1": 100}  # the same spec does not start again
    third = passes.run("https://models.example.com/iris/v3.joblib", 61, {"r1": (2, None)})
    assert served(third) == {"r1": 100, "r3": 0} and third.state.canary == 3
    # A fourth spec while revision 3 rolls out: 3 is aborted (superseded), 4 starts from step 0.
    fourth = passes.run("https://models.example.com/iris/v4.joblib", 62, {"r1": (2, None), "r3": (1, None)})
    assert served(fourth) == {"r1": 100, "r4": 0}
    assert [(r["revision"], r["outcome"]) for r in passes.status["revisions"]] == [
        (1, "Promoted"),
        (2, "Aborted"),
        (3, "Aborted"),
        (4, "Progressing"),
    ]
    back = passes.run("https://models.example.com/iris/v1.joblib", 63, {"r1": (2, None), "r4": (1, None)})
    assert served(back) == {"r1": 100} and promoted(passes.status) == "True"


def test_at_most_ten_revisions_are_kept_and_those_in_play_never_go() -> None:
    passes = Passes()
    for i in range(14):
        passes.run(f"https://models.example.com/iris/v{i}.joblib", i)
    numbers = [r["revision"] for r in passes.status["revisions"]]
    assert len(numbers) == 10 and 1 in numbers and numbers[-1] == 14  # 1 is still the stable one


def test_durations_parse_and_a_bad_one_names_its_field() -> None:
    assert spec.duration("x", "1h2m3s") == 3723.0 and spec.duration("x", "45s") == 45.0
    raw = resource(
        variants=[{"name": "stable", "modelUri": "file:///m.joblib"}],
        rollout={"steps": [{"pause": {"duration": "soon"}}]},
    )
    try:
        spec.parse(raw, default_image="i")
    except spec.SpecError as err:
        assert str(err).startswith("spec.rollout.steps[0].pause.duration:")
    else:
        raise AssertionError("a bad duration was taken")


def test_the_previous_spec_applied_again_while_its_revision_is_up_takes_all_traffic_back_at_once() -> None:
    passes = Passes()
    passes.run("https://models.example.com/iris/v1.joblib", 0)
    passes.run(V2, 1)
    up = {"r1": (2, None), "r2": (1, None)}
    passes.run(V2, 2, up)
    assert served(passes.run(V2, 12, up)) == {"r2": 100, "r1": 0}  # promoted; revision 1 stays up 30 s
    undone = passes.run("https://models.example.com/iris/v1.joblib", 20, up)
    assert served(undone) == {"r1": 100, "r2": 0} and undone.state.previous == 2
    assert passes.status["rollout"]["phase"] == "Promoted" and passes.events[-1] == "RolloutUndone"
    assert [r["revision"] for r in passes.status["revisions"]] == [1, 2]  # no new revision
    assert served(passes.run("https://models.example.com/iris/v1.joblib", 51, up)) == {"r1": 100}
    # Once the previous revision has gone, its spec again is a new revision, rolled out by the steps.
    again = passes.run(V2, 52, {"r1": (2, None)})
    assert served(again) == {"r1": 100, "r3": 0}


STEPS_FOR_A_PERSON = {
    "steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}, {"pause": {"duration": "60s"}}, {"setWeight": 80}],
    "scaleDownDelay": "30s",
}
UP = {"r1": (2, None), "r2": (1, None)}


def test_a_pause_with_no_duration_waits_for_a_person_and_each_action_is_taken_once() -> None:
    passes = Passes(STEPS_FOR_A_PERSON)
    passes.run("https://models.example.com/iris/v1.joblib", 0)
    passes.run(V2, 1)
    waiting = passes.run(V2, 2, UP)
    assert served(waiting) == {"r1": 80, "r2": 20} and waiting.wake is None  # no time ends this pause
    assert "paused until kubectl mlmodel promote or resume" in waiting.state.message
    assert passes.run(V2, 600, UP).state.step == 1  # still there, ten minutes on
    resumed = passes.run(V2, 601, UP, action="resume 2 a1")
    assert served(resumed) == {"r1": 50, "r2": 50} and resumed.wake == 60.0  # on to the timed pause
    assert passes.status["rollout"]["lastAction"] == "a1" and passes.events[-2:] == ["RolloutStep", "RolloutPaused"]
    again = passes.run(V2, 602, UP, action="resume 2 a1")  # the annotation stays: nothing more happens
    assert again.state.step == 3 and "ActionTaken" not in passes.events[-1:]
    held = passes.run(V2, 603, UP, action="pause 2 a2")
    assert held.state.held and passes.status["rollout"]["paused"] is True and held.state.phase == "Paused"
    still = passes.run(V2, 700, UP, action="pause 2 a2")  # the timed pause is over, but a person holds it
    assert served(still) == {"r1": 50, "r2": 50} and "paused by kubectl mlmodel pause" in still.state.message
    promoted = passes.run(V2, 701, UP, action="promote 2 a3")  # the pause under way ends: the next step
    assert served(promoted) == {"r2": 100, "r1": 0} and not promoted.state.held
    assert passes.events.count("ActionTaken") == 3


def test_promote_full_skips_the_steps_abort_sends_traffic_back_and_retry_starts_again() -> None:
    passes = Passes(STEPS_FOR_A_PERSON)
    passes.run("https://models.example.com/iris/v1.joblib", 0)
    passes.run(V2, 1)
    passes.run(V2, 2, UP)
    aborted = passes.run(V2, 3, UP, action="abort 2 b1")
    assert served(aborted) == {"r1": 100} and aborted.state.phase == "Aborted"
    assert passes.messages[-1] == (
        "revision 2 aborted by kubectl mlmodel abort (revision 2); all traffic is back on revision 1"
    )
    ignored = passes.run(V2, 4, UP, action="promote 2 b2")  # nothing rolls out to promote
    assert ignored.state.phase == "Aborted" and passes.events[-1] == "ActionIgnored"
    retried = passes.run(V2, 5, {"r1": (2, None)}, action="retry 2 b3")
    assert served(retried) == {"r1": 100, "r2": 0} and retried.state.phase == "Progressing"
    assert [r["outcome"] for r in passes.status["revisions"]] == ["Promoted", "Progressing"]
    passes.run(V2, 6, UP, action="retry 2 b3")
    full = passes.run(V2, 7, UP, action="promote-full 2 b4")
    assert served(full) == {"r2": 100, "r1": 0} and passes.status["rollout"]["phase"] == "Promoted"
    stale = passes.run(V2, 8, UP, action="abort 2 b5")  # for a rollout that is over
    assert stale.state.phase == "Promoted" and "revision 2 is not rolling out" in passes.messages[-1]


def test_an_action_annotation_that_is_not_one_names_its_field() -> None:
    raw = body()
    raw["metadata"]["annotations"] = {names.ANNOTATION_ROLLOUT_ACTION: "promote soon"}
    with pytest.raises(
        spec.SpecError, match=r"^metadata\.annotations\[mlmodel\.io/rollout-action\]: expected '<promote\|"
    ):
        spec.parse(raw, default_image="i")


def test_a_promotion_waits_for_a_ready_canary_whatever_skipped_the_steps() -> None:
    """``promote --full`` while the new revision's pods start, or steps that give it no weight: all traffic would go
    to pods that do not answer yet. The promotion waits for them (and for the routers to reach them)."""
    for steps, action in (
        (STEPS_FOR_A_PERSON, "promote-full 2 c1"),
        ({"steps": [{"pause": {"duration": "5s"}}]}, None),
    ):
        passes = Passes(steps)
        passes.run("https://models.example.com/iris/v1.joblib", 0)
        passes.run(V2, 1)
        starting = {"r1": (2, None), "r2": (0, None)}
        waiting = passes.run(V2, 10, starting, action=action)
        assert served(waiting) == {"r1": 100, "r2": 0} and waiting.state.phase == "Progressing", waiting.state
        assert "waiting for revision 2 to be ready" in waiting.state.message, waiting.state.message
        assert "RolloutPromoted" not in passes.events
        done = passes.run(V2, 11, UP, action=action)
        assert served(done) == {"r2": 100, "r1": 0} and passes.status["rollout"]["phase"] == "Promoted"
