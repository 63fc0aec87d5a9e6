"""The automated rollout live, as ``make demo`` shows it after the canary: ``iris-rollout.yaml`` applied as it
is, a new model (iris-v2) rolled out by the example's steps under a steady load and promoted, then undone with
``kubectl mlmodel undo`` by a user with only ``edit`` in the namespace (revision 1, still up, takes all traffic
back at once), then a model that answers 500 for most flowers (iris-5xx) aborted by the analysis, and a model
that does not load (a wrong digest) aborted, while revision 1 goes on serving. ``tests/e2e/test_rollout_e2e.py``
runs it and asserts every number."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlmodel_operator.rollout import name
from mlmodel_testing.cluster import REPO, Cluster
from mlmodel_testing.load import IRIS_MIX, Result, constant_load
from mlmodel_testing.models import FIVE_XX, ROLLOUT_EXAMPLE, V1, V2, WRONG_DIGEST, digest, digests
from mlmodel_testing.status import wait_settled

from mlmodel_demo.report import bar, table
from mlmodel_demo.steps import Steps

RATE = 50  # requests/s: about 1,000 at each 20 s step of the example, to judge each share within 5 points
ROLLBACK_RATE = 20  # requests/s for the bad models: 40 answers of the canary a 10 s interval at 20 %
PROMOTED_SECONDS = 180  # the example's promise: a good model promoted in under 3 minutes
SHARES = {"r1=80,r2=20": 20, "r1=50,r2=50": 50}  # X-Router-Weights at each setWeight -> revision 2's percent


@dataclass(frozen=True)
class Rollback:
    """A bad model rolled out and aborted: how long after the edit, when the abort was seen in the status, and
    the last answer of its revision after that (``None``: none)."""

    revision: int
    edited: float  # time.monotonic() of the edit
    aborted: float  # time.monotonic() when status.rollout said Aborted
    last_answer: float | None  # seconds from ``aborted`` to the last answer of the revision, if any came after

    @property
    def seconds(self) -> float:
        return self.aborted - self.edited

    def after(self) -> str:
        """Whether its revision answered after the abort was seen, in words."""
        if self.last_answer is None:
            return f"revision {self.revision} answered nothing after the abort"
        return f"the last answer of revision {self.revision} {self.last_answer:.1f} s after the abort"


@dataclass(frozen=True)
class Outcome:
    """What a client saw of the rollout: when revision 2 was promoted, its share at each step (percent and
    answers), the rollback of iris-5xx (revision 3) by the analysis and of the model that does not load
    (revision 4), and every request's result."""

    promoted_seconds: float
    shares: dict[str, tuple[float, int]]
    undo_seconds: float  # from the start of kubectl mlmodel undo to the last answer of revision 2
    undo_command_seconds: float  # how long the command took (it patches the spec just before it returns)
    failing: Rollback
    broken: Rollback
    results: list[Result]

    @property
    def failed(self) -> list[Result]:
        return [r for r in self.results if r.status != 200]


def rollout_status(cluster: Cluster, namespace: str) -> dict[str, Any]:
    return _rollout_of(cluster.get("modeldeployments", "iris", namespace=namespace))


def _rollout_of(md: dict[str, Any]) -> dict[str, Any]:
    return dict((md.get("status") or {}).get("rollout") or {})


def set_model(cluster: Cluster, namespace: str, uri: str, sha: str) -> None:
    """Start a rollout: a new model for the only variant."""
    patch = [
        {"op": "replace", "path": "/spec/variants/0/modelUri", "value": uri},
        {"op": "replace", "path": "/spec/variants/0/modelSha256", "value": sha},
    ]
    cluster.kubectl("-n", namespace, "patch", "md", "iris", "--type=json", "-p", json.dumps(patch))


def change(cluster: Cluster, namespace: str, model: tuple[str, str], until: dict[str, object], timeout: float) -> float:
    """A new model (URI, digest) for the only variant: the seconds until ``status.rollout`` has ``until``."""
    edited = time.monotonic()
    set_model(cluster, namespace, *model)
    wait_for(cluster, namespace, until, timeout)
    return time.monotonic() - edited


def wait_for(cluster: Cluster, namespace: str, until: dict[str, object], timeout: float) -> None:
    """Until ``status.rollout`` has ``until``."""
    what = f"status.rollout to have {until}"
    cluster.watch_until(
        what, ["-n", namespace, "md", "iris"], lambda md: until.items() <= _rollout_of(md).items(), timeout
    )


def rollback(
    cluster: Cluster, namespace: str, model: tuple[str, str], revision: int, results: list[Result]
) -> Rollback:
    """``model`` rolled out as ``revision`` until aborted, and the last answer of that revision (in ``results``,
    which a load fills) within 5 s after."""
    edited = time.monotonic()
    change(cluster, namespace, model, {"canaryRevision": revision, "phase": "Aborted"}, 180)
    aborted = time.monotonic()
    cluster.wait_until("5 s of answers after the abort", lambda: results and results[-1].sent > aborted + 5, 30)
    after = [r.sent - aborted for r in results if r.variant == name(revision) and r.sent > aborted]
    return Rollback(revision, edited, aborted, max(after, default=None))


def share(results: list[Result], weights: str) -> tuple[float, int]:
    """Revision 2's percent of the answers routed by ``weights``, and how many there were."""
    routed = [r for r in results if r.weights == weights]
    return (100 * sum(r.variant == "r2" for r in routed) / len(routed) if routed else 0.0), len(routed)


def run(steps: Steps, cluster: Cluster, namespace: str, models: Path) -> Outcome:
    """The example (its model store in ``namespace`` serving ``models``), then iris-v2 rolled out under ``RATE``
    requests a second through the entry Service, and undone; then the bad models, under ``ROLLBACK_RATE``."""
    with steps.step("rollout", f"kubectl apply -f {ROLLOUT_EXAMPLE.relative_to(REPO)}, until revision 1 serves"):
        cluster.kubectl("-n", namespace, "apply", "-f", str(ROLLOUT_EXAMPLE))
        wait_settled(cluster, namespace, timeout=300)
    with cluster.service_url(namespace, "iris", 80) as base:
        return _steps(steps, cluster, namespace, models, base)


def _steps(steps: Steps, cluster: Cluster, namespace: str, models: Path, base: str) -> Outcome:
    _, v2 = digests(models)
    with constant_load(base, RATE, IRIS_MIX) as load:
        cluster.wait_until("traffic", lambda: len(load.results) > 100, 30)
        with steps.step("rollout-good", "a new model, iris-v2: by the steps, promoted") as step:
            promoted = change(cluster, namespace, (V2, v2), {"stableRevision": 2}, PROMOTED_SECONDS)
            step.note = f"promoted {promoted:.0f} s after the edit"
        title = "kubectl mlmodel undo iris, by a user with only edit here: revision 1 takes all traffic back"
        with steps.step("rollout-undo", title) as step:
            editor = cluster.as_user(namespace, "edit", steps.workdir)  # a ServiceAccount, bound to edit here
            started = time.monotonic()
            editor.mlmodel("undo", "iris", "-n", namespace)
            command = time.monotonic() - started  # the spec is patched just before the plugin returns
            # Revision 1 is still up for the example's scaleDownDelay: the undo gives it all traffic at once.
            print(f"the undo command took {command:.1f} s", file=step.log, flush=True)
            wait_for(cluster, namespace, {"stableRevision": 1}, 60)
            back = time.monotonic()
            cluster.wait_until("answers after the undo", lambda: len(load.since(back + 2)) > 50, 30)
            undo = max((r.sent for r in load.since(started) if r.variant == "r2"), default=started) - started
            step.note = (
                f"the last answer of revision 2 {undo:.1f} s after it started (the command took {command:.1f} s)"
            )
        good = list(load.results)
    with constant_load(base, ROLLBACK_RATE, IRIS_MIX) as load:
        with steps.step("rollout-5xx", "a model that answers 500 for most flowers: aborted by the analysis") as step:
            failing = rollback(cluster, namespace, (FIVE_XX, digest(models, FIVE_XX)), 3, load.results)
            step.note = f"aborted {failing.seconds:.0f} s after the edit"
        with steps.step("rollout-bad", "a model that does not load (a wrong digest): aborted") as step:
            broken = rollback(cluster, namespace, (V1, WRONG_DIGEST), 4, load.results)
            step.note = f"aborted {broken.seconds:.0f} s after the edit"
        results = good + list(load.results)
    shares = {w: share(results, w) for w in SHARES}
    return Outcome(promoted, shares, undo, command, failing, broken, results)


def report(outcome: Outcome) -> str:
    """The shares revision 2 got at each step, and what came of the rollout and of the broken model."""
    rows = [
        [f"setWeight {wanted}", str(count), f"{bar(got / 100)} {got:5.1f} %"]
        for (got, count), wanted in zip(outcome.shares.values(), SHARES.values(), strict=True)
    ]
    return "\n".join(
        [
            table(["step", "answers", "revision 2's share"], rows, left={2}),
            "",
            f"Revision 2 promoted {outcome.promoted_seconds:.0f} s after the model changed; undone (kubectl mlmodel"
            f" undo), its last answer {outcome.undo_seconds:.1f} s after the command started (it took"
            f" {outcome.undo_command_seconds:.1f} s); a model that"
            f" answers 500 for most flowers aborted by the analysis {outcome.failing.seconds:.0f} s after the edit"
            f" ({outcome.failing.after()});"
            f" a model that does not load aborted after {outcome.broken.seconds:.0f} s; revision 1 serving"
            f" throughout. {failures(outcome)}",
        ]
    )


def failures(outcome: Outcome) -> str:
    """The failed requests in words: how many, who answered them, and when against the 5xx model's abort."""
    failed, failing = outcome.failed, outcome.failing
    counted = f"{len(failed)} of {len(outcome.results)} requests failed"
    if not failed:
        return f"{counted}."
    if {r.variant for r in failed} != {name(failing.revision)}:
        answered = Counter(f"{r.variant or 'no revision'} {r.status}" for r in failed)
        return f"{counted}: {', '.join(f'{n} {what}' for what, n in sorted(answered.items()))}."
    late = max(r.sent for r in failed) - failing.aborted
    when = "before its abort" if late <= 0 else f"the last {late:.1f} s after its abort, before the routers had it"
    return f"{counted}, all answered by iris-5xx {when}."
