"""Progressive delivery of a one-variant ModelDeployment (``spec.rollout``). Pure: status in, plan out.

Each distinct spec of the variant (its entry in ``spec.variants`` less name, weight, replicas and
autoscaling, with the image it resolves to) is a revision, numbered from 1 and recorded in
``status.revisions`` (the last ``MAX_REVISIONS``, each with the spec it was made from). The first
revision serves at once. A new one (the user changed the model or the image) is the canary: it runs
beside the stable revision and the steps move traffic to it, ``setWeight`` by ``setWeight``, with
``pause`` between them; after the last step it is promoted, and the previous revision stays up for
``scaleDownDelay`` (an instant way back: the spec of that revision applied again meanwhile takes all traffic
back at once, with no steps) before it goes. A canary whose pods fail (its model does not
load, it crashes) is aborted: all traffic goes back to the stable revision and the canary goes. A new
spec during a rollout starts a fresh one from its step 0; the spec of the stable revision again ends
it. Where a rollout is lives in the status, so an operator that restarts goes on from the same step.

``plan`` turns that into what to reconcile: the ModelDeployment with one variant per revision in play
(``r<N>``, weighted by the step), through the router, whose weights are live.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from mlmodel_operator import actions, analysis, render, spec, status
from mlmodel_operator.spec import Analysis, ModelDeployment, Prometheus

MAX_REVISIONS = 10
PROGRESSING, PAUSED, PROMOTED, ABORTED = "Progressing", "Paused", "Promoted", "Aborted"
CONDITION = "Promoted"
# In ``observed``: 1 once every router pod routes by the routes of every revision in play, and the router pods that
# do not yet (their names, or None).
ROUTER = "-router"


@dataclass(frozen=True)
class Revision:
    number: int
    # The variant's spec (JSON) less name, weight, replicas and autoscaling, and its image; "" in a status
    # written before revisions kept it (only those in play did).
    template: str
    model_uri: str
    model_sha256: str | None
    image: str
    created: str
    outcome: str  # Progressing, Promoted, Aborted

    def status(self) -> dict[str, Any]:
        out = {
            "revision": self.number,
            "modelUri": status.redact_uri(self.model_uri),
            "image": self.image,
            "created": self.created,
            "outcome": self.outcome,
        }
        out |= {"template": self.template} if self.template else {}
        return out | ({"modelSha256": self.model_sha256} if self.model_sha256 else {})


@dataclass(frozen=True)
class Judged:
    """The analysis of a rollout: when the interval under way started, the intervals judged so far by their
    result, and the verdict on the last one."""

    started: str
    passed: int = 0
    failed: int = 0
    inconclusive: int = 0
    last: analysis.Interval | None = None

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "intervalStartedAt": self.started,
            "passedIntervals": self.passed,
            "failedIntervals": self.failed,
            "inconclusiveIntervals": self.inconclusive,
        }
        return out | ({} if self.last is None else {"lastInterval": self.last.status()})


Baseline = tuple[str, analysis.Snapshot]  # when the interval under way started, and the routers' counts then


@dataclass(frozen=True)
class Readings:
    """What the analysis reads, only when it needs to: the counts at the start of the interval under way (kept
    by the caller between passes, from ``Plan.baseline``), every router pod's counts now, a query's value now."""

    start: Baseline | None = None
    routers: Callable[[], analysis.Snapshot] = dict
    query: Callable[[Prometheus], float | None] = lambda _: None


@dataclass(frozen=True)
class State:
    """Where the rollout is: the revisions in play, the step (``len(steps)``: none left) and since when,
    the canary's weight, the phase, and the previous stable revision kept after a promotion."""

    stable: int
    canary: int | None = None
    step: int = 0
    since: str = ""
    weight: int = 0
    phase: str = PROMOTED
    message: str = ""
    previous: int | None = None
    promoted: str | None = None
    judged: Judged | None = None  # with spec.rollout.analysis, once the canary got traffic
    held: bool = False  # paused by a person (kubectl mlmodel pause) until resumed or promoted
    handled: str = ""  # the id of the last action taken (see ``actions``)

    @property
    def rolling(self) -> bool:
        """A rollout is in flight: its steps move traffic, or a pause holds them."""
        return self.phase in (PROGRESSING, PAUSED)


@dataclass(frozen=True)
class Plan:
    md: ModelDeployment  # what to reconcile: a variant r<N> per revision in play
    state: State
    revisions: tuple[Revision, ...]
    events: tuple[tuple[str, str, str], ...]  # (type, reason, message)
    wake: float | None  # seconds until a pass is due (a pause or an interval ends, the previous revision goes)
    baseline: Baseline | None = None  # the routers' counts when the analysis's interval under way started


def name(number: int) -> str:
    """The variant (and child objects' suffix) of revision ``number``."""
    return f"r{number}"


def template(md: ModelDeployment, raw: Mapping[str, Any]) -> str:
    """What makes a revision: the variant's spec that its pods run, and the image it resolves to."""
    item = {k: v for k, v in raw.items() if k not in ("name", "weight", "replicas", "autoscaling")}
    return json.dumps({"variant": item, "image": md.variants[0].image}, sort_keys=True, separators=(",", ":"))


def _revisions(status: Mapping[str, Any]) -> list[Revision]:
    return [
        Revision(
            int(r["revision"]),
            str(r.get("template", "")),
            str(r.get("modelUri", "")),
            r.get("modelSha256"),
            str(r.get("image", "")),
            str(r.get("created", "")),
            str(r.get("outcome", "")),
        )
        for r in status.get("revisions") or []
    ]


def _state(raw: Mapping[str, Any]) -> State:
    judged = raw.get("analysis")
    return State(
        stable=int(raw["stableRevision"]),
        canary=raw.get("canaryRevision"),
        step=int(raw.get("currentStepIndex", 0)),
        since=str(raw.get("stepStartedAt", "")),
        weight=int(raw.get("canaryWeight", 0)),
        phase=str(raw.get("phase", PROMOTED)),
        message=str(raw.get("message", "")),
        previous=raw.get("previousRevision"),
        promoted=raw.get("promotedAt"),
        held=bool(raw.get("paused", False)),
        handled=str(raw.get("lastAction") or ""),
        judged=None
        if not judged
        else Judged(
            str(judged["intervalStartedAt"]),
            int(judged.get("passedIntervals", 0)),
            int(judged.get("failedIntervals", 0)),
            int(judged.get("inconclusiveIntervals", 0)),
            analysis.interval_of(judged["lastInterval"]) if judged.get("lastInterval") else None,
        ),
    )


def plan(
    md: ModelDeployment,
    raw: Mapping[str, Any],
    before: Mapping[str, Any],
    observed: Mapping[str, tuple[int, str | None]],
    now: str,
    readings: Readings = Readings(),
) -> Plan:
    """The next step of ``md``'s rollout. ``raw`` is its variant as written, ``before`` the status the last
    pass wrote, ``observed`` each revision variant's ready replicas and failure (from the last pass; none
    after a restart, which holds the steps for a pass), ``readings`` what the analysis reads."""
    assert md.rollout is not None
    steps = md.rollout.steps
    revisions = _revisions(before)
    events: list[tuple[str, str, str]] = []
    wanted = template(md, raw)
    variant = md.variants[0]

    def made(number: int, outcome: str) -> Revision:
        return Revision(number, wanted, variant.model_uri, variant.model_sha256, variant.image, now, outcome)

    def mark(number: int, outcome: str) -> None:
        revisions[:] = [replace(r, outcome=outcome) if r.number == number else r for r in revisions]

    if not revisions or not before.get("rollout"):
        revisions = [made(1, PROMOTED)]
        state = State(stable=1, step=len(steps), since=now, message="revision 1 serves all traffic")
        events.append(("Normal", "RevisionPromoted", "revision 1 serves all traffic (the first: no steps)"))
    else:
        state = _state(before["rollout"])
        by_number = {r.number: r for r in revisions}
        current = state.canary if state.rolling and state.canary else state.stable
        if state.phase == ABORTED and wanted == by_number[state.stable].template:
            state = replace(state, canary=None, phase=PROMOTED, message=f"revision {state.stable} serves all traffic")
        elif wanted != by_number[current].template and not (
            state.phase == ABORTED and state.canary and wanted == by_number[state.canary].template
        ):
            if state.canary is not None and state.rolling:
                mark(state.canary, ABORTED)
                events.append(("Warning", "RolloutAborted", f"revision {state.canary}: superseded by a new spec"))
            if wanted == by_number[state.stable].template:
                state = replace(state, canary=None, weight=0, phase=PROMOTED, step=len(steps), since=now)
                state = replace(state, message=f"back to revision {state.stable}, which serves all traffic")
            elif state.previous is not None and wanted == by_number[state.previous].template:
                # An undo while the previous revision is still up: it takes all traffic back at once.
                leaving, back = state.stable, state.previous
                message = f"undone: revision {back} serves all traffic again, revision {leaving} stays up"
                message += f" for {md.rollout.scale_down_delay:g} s"
                state = State(
                    back,
                    step=len(steps),
                    since=now,
                    message=message,
                    previous=leaving,
                    promoted=now,
                    handled=state.handled,
                )
                events.append(("Normal", "RolloutUndone", message))
            else:
                number = max(r.number for r in revisions) + 1
                revisions.append(made(number, PROGRESSING))
                state = replace(
                    state, canary=number, step=0, since=now, weight=0, phase=PROGRESSING, judged=None, held=False
                )
                state = replace(state, message=f"revision {number} is rolling out")
                events.append(("Normal", "RolloutStarted", f"revision {number} replaces revision {state.stable}"))
    skip = None
    if md.action is not None and md.action.id != state.handled:
        state, skip = _act(md.action, state, wanted, {r.number: r for r in revisions}, now, events, mark)
    wake: float | None = None
    baseline = None
    if state.rolling and state.canary is not None:
        state, wake, baseline = _advance(md, state, observed, readings, now, events, mark, skip)
    if state.previous is not None and state.promoted is not None:
        left = md.rollout.scale_down_delay - status.seconds_between(state.promoted, now)
        if left <= 0:
            state = replace(state, previous=None)
        else:
            wake = left if wake is None else min(wake, left)
    in_play = {state.stable, *(n for n in (state.canary, state.previous) if n is not None)}
    while len(revisions) > MAX_REVISIONS:  # the oldest that no longer serves goes
        revisions.remove(next(r for r in revisions if r.number not in in_play))
    serving = _serving(md, state, {r.number: r for r in revisions})
    return Plan(serving, state, tuple(revisions), tuple(events), wake, baseline)


def _act(
    action: actions.Action,
    state: State,
    wanted: str,
    revisions: Mapping[int, Revision],
    now: str,
    events: list[tuple[str, str, str]],
    mark: Callable[[int, str], None],
) -> tuple[State, str | None]:
    """Take a person's action, once: the state it leads to, and what the steps skip in this pass (``PAUSE``: the
    pause under way, ``RESUME``: a pause that waits for a person, ``PROMOTE_FULL``: every step left)."""
    said = f"kubectl mlmodel {action.verb} (revision {action.revision})"
    state = replace(state, handled=action.id)
    rolling = state.rolling and state.canary == action.revision
    if action.verb == actions.RETRY and state.phase == ABORTED and state.canary == action.revision:
        if wanted != revisions[action.revision].template:
            events.append(("Warning", "ActionIgnored", f"{said}: the spec is no longer that revision's"))
            return state, None
        mark(action.revision, PROGRESSING)
        message = f"revision {action.revision} is rolling out again"
        events.append(("Normal", "RolloutStarted", f"{message}: {said}"))
        state = replace(state, phase=PROGRESSING, step=0, since=now, weight=0, judged=None, held=False)
        return replace(state, message=message), None
    if not rolling:
        what = f"revision {action.revision} is not rolling out" + (
            f" (revision {state.canary} is)" if state.rolling else ""
        )
        events.append(("Warning", "ActionIgnored", f"{said}: {what}"))
        return state, None
    events.append(("Normal", "ActionTaken", said))
    if action.verb == actions.ABORT:
        return replace(state, message=f"revision {action.revision} aborted by {said}"), actions.ABORT
    if action.verb == actions.PAUSE:
        return replace(state, held=True), None
    skip = {actions.PROMOTE: actions.PAUSE, actions.RESUME: actions.RESUME}.get(action.verb, action.verb)
    return replace(state, held=False), skip


def _advance(
    md: ModelDeployment,
    state: State,
    observed: Mapping[str, tuple[int, str | None]],
    readings: Readings,
    now: str,
    events: list[tuple[str, str, str]],
    mark: Callable[[int, str], None],
    skip: str | None = None,
) -> tuple[State, float | None, Baseline | None]:
    """Walk the steps as far as they go now: a failed canary aborts, and so does one that failed its analysis
    more than ``failureLimit`` times; a weight waits for a ready canary, a pause for its time or a person.
    ``skip`` is what a person's action skips (see ``_act``). Also the wake (when a pause or an interval ends)
    and the counts the interval under way started from."""
    assert md.rollout is not None and state.canary is not None
    steps, gates = md.rollout.steps, md.rollout.analysis
    canary = state.canary
    if name(canary) not in observed and skip is None:  # the operator just started: look at the canary first
        return state, 1.0, None
    ready, failure = observed.get(name(canary), (0, None))
    reached, behind = observed.get(ROUTER, (1, None))
    serves = bool(ready and reached)  # it answers, and every router pod reaches it
    routers = f"router pods {behind}" if behind else "every router pod"
    waiting = f"{routers} to reach revision {canary}" if ready else f"revision {canary} to be ready"

    def abort(message: str) -> tuple[State, None, None]:
        mark(canary, ABORTED)
        message += f"; all traffic is back on revision {state.stable}"
        events.append(("Warning", "RolloutAborted", message))
        return replace(state, weight=0, phase=ABORTED, message=message), None, None

    if failure is not None:
        return abort(f"revision {canary} failed: {failure}")
    if skip == actions.ABORT:
        return abort(state.message)
    if skip == actions.PROMOTE_FULL:
        state = replace(state, step=len(steps))
    baseline = None
    judging = gates is not None and _judged(md, state) and skip != actions.PROMOTE_FULL
    if judging:  # an interval that ends now is judged by the step it ran in
        assert gates is not None
        state, verdict, baseline = _judge(gates, state, readings, now)
        if verdict is not None and verdict.result == analysis.FAILED:
            assert state.judged is not None
            failed = ", ".join(m.describe() for m in verdict.failed)
            what = f"revision {canary} failed its analysis: {failed}, with {verdict.errors} 5xx of {verdict.requests}"
            what += f" answers and {verdict.compared} copies compared" if verdict.compared else " answers"
            what += f" in the last {gates.interval:g} s"
            if state.judged.failed > gates.failure_limit:
                return abort(f"{what} ({state.judged.failed} failed intervals; failureLimit {gates.failure_limit})")
            allowed = f"{state.judged.failed} failed of {gates.failure_limit} allowed"
            events.append(("Warning", "AnalysisFailed", f"{what} ({allowed})"))
    wake: float | None = None
    while state.step < len(steps):
        step = steps[state.step]
        label = f"step {state.step + 1}/{len(steps)}"
        if state.held:
            message = f"{label}: paused by kubectl mlmodel pause with revision {canary} at {state.weight} %"
            state = replace(state, message=message, phase=PAUSED)
            break
        routed = step.shadow is not None or step.set_weight is not None  # the canary must serve, through the router
        if routed and not serves:
            state = replace(state, message=f"{label}: waiting for {waiting}")
            break
        if step.shadow is not None:
            shadow = step.shadow
            remaining = shadow.seconds - status.seconds_between(state.since, now)
            last = state.judged.last if state.judged else None
            agreed = (
                last is not None
                and last.result == analysis.PASSED
                and any(m.passed for m in last.metrics if m.name in analysis.COMPARING)
            )
            if remaining > 0 or not agreed:
                message = f"{label}: shadow, {shadow.percent} % of requests copied to revision {canary}"
                message += f" for {shadow.seconds:g} s" if remaining > 0 else ", until an interval passes the agreement"
                if state.message != message:
                    events.append(("Normal", "RolloutShadow", message))
                state, wake = replace(state, message=message), max(remaining, 0) or None
                break
            state = replace(state, step=state.step + 1, since=now)
            continue
        if step.set_weight is not None:
            events.append(("Normal", "RolloutStep", f"{label}: revision {canary} gets {step.set_weight} %"))
            state = replace(state, step=state.step + 1, since=now, weight=step.set_weight)
            continue
        # A pause: promote ends it, resume ends one that waits for a person.
        if skip == actions.PAUSE or (skip == actions.RESUME and step.pause_seconds is None):
            skip = None
            state = replace(state, step=state.step + 1, since=now, phase=PROGRESSING)
            continue
        if step.pause_seconds is None:
            message = f"{label}: paused until kubectl mlmodel promote or resume, revision {canary} at {state.weight} %"
            left = None
        else:
            message = f"{label}: pause {step.pause_seconds:g} s with revision {canary} at {state.weight} %"
            left = step.pause_seconds - status.seconds_between(state.since, now)
        if left is None or left > 0:
            if state.message != message:
                events.append(("Normal", "RolloutPaused", message))
            state, wake = replace(state, message=message, phase=PAUSED), left
            break
        state = replace(state, step=state.step + 1, since=now, phase=PROGRESSING)
    else:
        # promote --full, or steps with no weight: not before it can serve (if it runs pods at all)
        if render.least_replicas(md.variants[0]) > 0 and not serves:
            state = replace(state, message=f"promoting: waiting for {waiting}", phase=PROGRESSING)
            return state, None, baseline
        mark(canary, PROMOTED)
        message = f"revision {canary} promoted: it serves all traffic; revision {state.stable} stays up"
        message += f" for {md.rollout.scale_down_delay:g} s"
        events.append(("Normal", "RolloutPromoted", message))
        promoted = State(
            stable=canary,
            step=len(steps),
            since=now,
            phase=PROMOTED,
            message=message,
            previous=state.stable,
            promoted=now,
            judged=state.judged,
            handled=state.handled,
        )
        return promoted, md.rollout.scale_down_delay, None
    if gates is not None and _judged(md, state):
        if baseline is None:  # the canary has just got traffic (or copies): its first interval starts
            state, _, baseline = _judge(gates, state, readings, now)
        assert state.judged is not None
        due = gates.interval - status.seconds_between(state.judged.started, now)
        wake = due if wake is None else min(wake, due)
    return state, wake, baseline


def _shadowing(md: ModelDeployment, state: State) -> spec.Shadow | None:
    """The shadow step under way, if one is."""
    assert md.rollout is not None
    steps = md.rollout.steps
    return steps[state.step].shadow if state.rolling and state.step < len(steps) else None


def _judged(md: ModelDeployment, state: State) -> bool:
    """Whether the canary is being judged: it has traffic, or copies in a shadow step."""
    return state.weight > 0 or _shadowing(md, state) is not None


def _judge(
    gates: Analysis, state: State, readings: Readings, now: str
) -> tuple[State, analysis.Interval | None, Baseline]:
    """The interval under way judged if it is due, and the next one started; one started if none is under way
    (or its counts at the start went with a restart of the operator: it starts again, nothing is skipped)."""
    assert state.canary is not None
    judged, start = state.judged, readings.start
    if judged is None or start is None or start[0] != judged.started:
        return replace(state, judged=replace(judged or Judged(now), started=now)), None, (now, readings.routers())
    if status.seconds_between(judged.started, now) < gates.interval:
        return state, None, start
    snapshot = readings.routers()
    counts = analysis.window(start[1], snapshot)
    query = readings.query(gates.prometheus) if gates.prometheus is not None else None
    none = analysis.Tally()
    verdict = analysis.judge(gates, counts.get(name(state.canary), none), counts.get(name(state.stable), none), query)
    judged = replace(
        judged,
        started=_next_start(judged.started, gates.interval, now),
        passed=judged.passed + (verdict.result == analysis.PASSED),
        failed=judged.failed + (verdict.result == analysis.FAILED),
        inconclusive=judged.inconclusive + (verdict.result == analysis.INCONCLUSIVE),
        last=verdict,
    )
    return replace(state, judged=judged), verdict, (judged.started, snapshot)


def _next_start(started: str, interval: float, now: str) -> str:
    """When the interval after the one that started at ``started`` starts: ``interval`` after it, on the analysis's
    cadence, so that a pass that comes late (a busy operator) does not push every later interval back; ``now`` if
    the pass came a whole interval late."""
    due = datetime.fromisoformat(started) + timedelta(seconds=interval)
    return due.strftime(status.TIMESTAMP) if (datetime.fromisoformat(now) - due).total_seconds() < interval else now


def _serving(md: ModelDeployment, state: State, revisions: Mapping[int, Revision]) -> ModelDeployment:
    """``md`` with one variant per revision in play, through the router: the stable one, the canary at its
    weight while it rolls out, and the previous one at weight 0 until it goes."""
    variant = md.variants[0]

    def of(number: int, weight: int) -> spec.Variant:
        recorded = json.loads(revisions[number].template)
        item = {**recorded["variant"], "name": name(number), "weight": weight}
        parsed = spec.variant_of(item, recorded["image"])
        return replace(parsed, replicas=variant.replicas, autoscaling=variant.autoscaling)

    canary = state.canary if state.rolling else None
    variants = [of(state.stable, 100 - (state.weight if canary else 0))]
    if canary is not None:
        variants.append(of(canary, state.weight))
    if state.previous is not None and state.previous not in (state.stable, canary):
        variants.append(of(state.previous, 0))
    routing = replace(md.routing, always=True)
    shadow = _shadowing(md, state)
    if shadow is not None and canary is not None and md.rollout and md.rollout.analysis:
        budget = md.routing.mirror.buffer_bytes if md.routing.mirror else spec.DEFAULT_MIRROR_BUFFER
        mirror = spec.Mirror(name(canary), shadow.percent, budget, md.rollout.analysis.tolerance)
        routing = replace(routing, mirror=mirror)
    return replace(md, variants=tuple(variants), routing=routing)


def with_rollout(
    plan: Plan, computed: Mapping[str, Any], before: Sequence[Mapping[str, Any]], now: str
) -> dict[str, Any]:
    """``computed`` (the status of the revisions' variants) with the rollout, the revisions and the
    ``Promoted`` condition (``before``: the conditions last written). While a rollout is in flight,
    ``Progressing`` names its step, and ``Ready`` holds as long as the stable revision serves."""
    state, md = plan.state, plan.md
    assert md.rollout is not None
    conditions = {c["type"]: c for c in computed.get("conditions") or []}
    stable: Mapping[str, Any] = next((v for v in computed.get("variants") or [] if v["name"] == name(state.stable)), {})
    ready = conditions.get(status.READY)
    values: dict[str, tuple[bool, str, str]] = {}
    if state.rolling and ready and ready["reason"] == "Waiting" and stable.get("readyReplicas"):
        values[status.READY] = (True, "StableRevisionReady", f"revision {state.stable} serves; {state.message}")
    if state.rolling:
        values[status.PROGRESSING] = (True, f"Rollout{state.phase}", state.message)
    values[CONDITION] = (
        state.phase == PROMOTED,
        "RevisionPromoted" if state.phase == PROMOTED else f"Rollout{state.phase}",
        state.message,
    )
    for kind, value in values.items():
        conditions[kind] = status.new_condition(kind, value, md.generation, before, now)
    rollout: dict[str, Any] = {
        "phase": state.phase,
        "step": f"{state.step}/{len(md.rollout.steps)}",
        "currentStepIndex": state.step,
        "stepStartedAt": state.since,
        "stableRevision": state.stable,
        "canaryWeight": state.weight if state.rolling else 0,
        "message": state.message,
    }
    # Each optional field, null when unset: the status is merged into the object, and null removes it there.
    rollout |= {
        "canaryRevision": state.canary,
        "previousRevision": state.previous,
        "promotedAt": state.promoted,
        "paused": True if state.held else None,
        "lastAction": state.handled or None,
        "analysis": None if state.judged is None else state.judged.status(),
    }
    return {
        **computed,
        "conditions": list(conditions.values()),
        "rollout": rollout,
        "revisions": [r.status() for r in plan.revisions],
    }
