"""``kubectl mlmodel``: watch and drive a ModelDeployment's rollout, through the Kubernetes API only, as the user of
the current kubeconfig (a user with ``edit`` in the namespace may: the chart aggregates ModelDeployments into it).
It reads and patches through ``kubectl`` itself (``Kubectl``), as plugins do: the user's kubeconfig, context and
credentials work as they do for kubectl, and a command answers in a fraction of a second, not the 2 s it took to
import the Kubernetes client.

A person's action on a rollout (promote, abort, retry, pause, resume) is the annotation ``actions`` describes: the
operator acts on it once, and this waits a few seconds to say what came of it. ``undo`` applies a recorded
revision's spec again; ``set-weight`` edits the weights of a ModelDeployment without ``spec.rollout``. What is
shown is ``render_status`` and ``render_history``, pure.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from mlmodel_operator import actions, names, setweight

ACKNOWLEDGED_SECONDS = 10.0  # how long an action waits for the operator to act on it
WATCH_SECONDS = 2.0


class PluginError(Exception):
    """A one-line error for the user."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kubectl mlmodel",
        description="Watch and drive a ModelDeployment's rollout, through the Kubernetes API, as the current"
        " kubeconfig's user.",
    )
    parser.add_argument("-n", "--namespace", help="the ModelDeployment's namespace (default: the context's)")
    parser.add_argument("--context", help="the kubeconfig context to use")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(verb: str, what: str) -> argparse.ArgumentParser:
        added = commands.add_parser(verb, help=what, description=what)
        added.add_argument("name", help="the ModelDeployment")
        # Also after the command, as with kubectl: `kubectl mlmodel status iris -n ml`.
        added.add_argument("-n", "--namespace", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        added.add_argument("--context", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        return added

    command("status", "the rollout: steps, weights, analysis and revisions").add_argument(
        "--watch", "-w", action="store_true", help=f"show it again every {WATCH_SECONDS:g} s until interrupted"
    )
    command("promote", "end the pause under way (--full: skip every step left)").add_argument(
        "--full", action="store_true", help="promote once its pods are ready: skip every step left, and the analysis"
    )
    command("abort", "send all traffic back to the stable revision")
    command("retry", "roll an aborted revision out again from step 1")
    command("pause", "hold the steps where they are (the analysis goes on)")
    command("resume", "let the steps go on, and end a pause that waits for a person")
    command("undo", "apply the last promoted revision's spec before the stable one again").add_argument(
        "--to-revision", type=int, help="that revision's spec instead"
    )
    command("history", "the revisions: model, digest, image, when and outcome")
    command("set-weight", "set the weights of a ModelDeployment without spec.rollout").add_argument(
        "weights", nargs="+", metavar="VARIANT=PERCENT"
    )
    args = parser.parse_args(argv)
    try:
        api = Kubectl(args.context)
        print(_run(api, args.namespace or api.namespace(), args))
    except PluginError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


class Kubectl:
    """ModelDeployments read and patched by ``kubectl`` (``--context`` if given), its refusals one line each."""

    RESOURCE = f"{names.PLURAL}.{names.GROUP}"

    def __init__(self, context: str | None) -> None:
        binary = shutil.which("kubectl")
        if binary is None:
            raise PluginError("kubectl is not on PATH: kubectl mlmodel runs it")
        self.command = [binary, *(["--context", context] if context else [])]

    def namespace(self) -> str:
        """The context's namespace, or ``default``."""
        return (
            self._run("read the kubeconfig", "config", "view", "--minify", "-o", "jsonpath={..namespace}") or "default"
        )

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        out = self._run(
            f"get ModelDeployment {name} in namespace {namespace}",
            "get",
            self.RESOURCE,
            name,
            "-n",
            namespace,
            "-o",
            "json",
        )
        return dict(json.loads(out))

    def patch(self, md: Mapping[str, Any], body: Any, what: str) -> None:
        """Patch ``md``; a guarded patch (``_guarded``, a JSON patch) refused because the spec changed meanwhile says
        so."""
        meta = md["metadata"]
        kind = "json" if isinstance(body, list) else "merge"
        what = f"{what} ModelDeployment {meta['name']} in namespace {meta['namespace']}"
        try:
            self._run(
                what,
                "patch",
                self.RESOURCE,
                meta["name"],
                "-n",
                meta["namespace"],
                "--type",
                kind,
                "-p",
                json.dumps(body),
            )
        except PluginError:
            if kind != "json":
                raise
            now = self.get(meta["namespace"], meta["name"])["metadata"].get("generation")
            if now != meta.get("generation"):
                raise PluginError(
                    f"{meta['name']} changed while this ran (generation {meta.get('generation')}, now {now}): "
                    "run the command again"
                ) from None
            raise

    def _run(self, what: str, *args: str) -> str:
        done = subprocess.run([*self.command, *args], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise PluginError(f"cannot {what}: {refusal(done.stderr)}")
        return done.stdout


def refusal(stderr: str) -> str:
    """kubectl's error in one line, without its ``Error from server (Reason):`` or ``error:`` prefix."""
    message = " ".join(line.strip() for line in stderr.splitlines() if line.strip()) or "kubectl failed"
    return re.sub(r"^(Error from server( \([A-Za-z]+\))?|error): ", "", message)


def _run(api: Kubectl, namespace: str, args: argparse.Namespace) -> str:
    md = api.get(namespace, args.name)
    if args.command == "status":
        while args.watch:
            print("\033[2J\033[H" + render_status(md), flush=True)
            time.sleep(WATCH_SECONDS)
            md = api.get(namespace, args.name)
        return render_status(md)
    if args.command == "history":
        return render_history(md)
    if args.command == "undo":
        item, number = undo_variant(md, args.to_revision)
        api.patch(md, _guarded(md, [{"op": "replace", "path": "/spec/variants/0", "value": item}]), "undo")
        return f"{args.name}: revision {number}'s spec applied again ({item.get('modelUri')})"
    if args.command == "set-weight":
        api.patch(md, _guarded(md, weight_patch(md, args.weights)), "set the weights of")
        return f"{args.name}: weights {' '.join(args.weights)}"
    verb = actions.PROMOTE_FULL if args.command == "promote" and args.full else args.command
    action = actions.Action(verb, action_revision(md, verb), f"{time.time_ns():x}")
    annotations = {"metadata": {"annotations": {names.ANNOTATION_ROLLOUT_ACTION: str(action)}}}
    api.patch(md, annotations, verb)
    deadline = time.monotonic() + ACKNOWLEDGED_SECONDS
    while time.monotonic() < deadline:
        rollout = (api.get(namespace, args.name).get("status") or {}).get("rollout") or {}
        if rollout.get("lastAction") == action.id:
            return f"{args.name}: {verb} revision {action.revision}: {rollout.get('message', '')}"
        time.sleep(0.25)
    return f"{args.name}: {verb} revision {action.revision} asked; the operator has not acted on it yet"


def _guarded(md: Mapping[str, Any], ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``ops`` as a JSON patch that applies only to the spec read: a concurrent edit of the spec makes it fail, the
    operator's status writes (which move ``resourceVersion``, not ``generation``) do not."""
    return [{"op": "test", "path": "/metadata/generation", "value": md["metadata"]["generation"]}, *ops]


def action_revision(md: Mapping[str, Any], verb: str) -> int:
    """The revision ``verb`` acts on: the one rolling out (retry: the one aborted)."""
    rollout = (md.get("status") or {}).get("rollout")
    name = md["metadata"]["name"]
    if not md["spec"].get("rollout") or not rollout:
        raise PluginError(f"{name} has no spec.rollout: there is no rollout to {verb}")
    phase, canary = rollout.get("phase"), rollout.get("canaryRevision")
    wanted = ("Aborted",) if verb == actions.RETRY else ("Progressing", "Paused")
    if phase not in wanted or canary is None:
        raise PluginError(f"{name}'s rollout is {phase}: nothing to {verb} (only while {' or '.join(wanted)})")
    return int(canary)


def undo_variant(md: Mapping[str, Any], to: int | None) -> tuple[dict[str, Any], int]:
    """The variant to apply for an undo (revision ``to``, or the last promoted one before the stable), and its
    revision: the revision's recorded spec, with the variant's name, weight, replicas and autoscaling as now."""
    name = md["metadata"]["name"]
    status = md.get("status") or {}
    revisions = {r["revision"]: r for r in status.get("revisions") or []}
    stable = ((status.get("rollout") or {}).get("stableRevision")) or 0
    if not md["spec"].get("rollout") or not revisions:
        raise PluginError(f"{name} has no revisions: undo needs spec.rollout")
    if to is None:
        earlier = [n for n, r in revisions.items() if n < stable and r.get("outcome") == "Promoted"]
        if not earlier:
            raise PluginError(f"{name} has no promoted revision before revision {stable}")
        to = max(earlier)
    if to not in revisions:
        raise PluginError(f"{name} has no revision {to} (it keeps {', '.join(map(str, sorted(revisions)))})")
    if not revisions[to].get("template"):
        raise PluginError(f"{name}'s revision {to} has no recorded spec to apply again")
    current = md["spec"]["variants"][0]
    kept = {k: current[k] for k in ("name", "weight", "replicas", "autoscaling") if k in current}
    return {**json.loads(revisions[to]["template"])["variant"], **kept}, to


def weight_patch(md: Mapping[str, Any], pairs: Sequence[str]) -> list[dict[str, Any]]:
    """The JSON patch ops that set ``variant=percent`` weights; they must leave weights summing to 100."""
    name = md["metadata"]["name"]
    if md["spec"].get("rollout"):
        raise PluginError(f"{name} has spec.rollout: its steps set the weights (use promote, abort or undo)")
    variants = [v["name"] for v in md["spec"]["variants"]]
    try:
        weights = setweight.moved({v["name"]: int(v.get("weight", 0)) for v in md["spec"]["variants"]}, pairs)
    except setweight.WeightError as err:
        raise PluginError(f"{name}: {err}") from None
    return [
        {"op": "replace", "path": f"/spec/variants/{i}/weight", "value": weights[v]} for i, v in enumerate(variants)
    ]


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    cells = [list(map(str, header)), *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]


def _step(step: Mapping[str, Any]) -> str:
    if "setWeight" in step:
        return f"setWeight {step['setWeight']}"
    if "shadow" in step:
        shadow = step["shadow"]
        return f"shadow {shadow.get('percent', 100)} % for {shadow.get('duration')} (copies only)"
    duration = (step.get("pause") or {}).get("duration")
    return f"pause {duration}" if duration else "pause (until promote or resume)"


def render_status(md: Mapping[str, Any]) -> str:
    """The rollout of ``md`` as a person reads it: where it is, the steps, the analysis, the revisions."""
    meta, spec, status = md["metadata"], md["spec"], md.get("status") or {}
    rollout = status.get("rollout") or {}
    lines = [f"Name:       {meta['name']}", f"Namespace:  {meta['namespace']}"]
    ready: Mapping[str, Any] = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})
    lines.append(f"Ready:      {ready.get('status', 'Unknown')} {ready.get('reason', '')}".rstrip())
    lines.append(f"Weights:    {status.get('weights', '')}")
    if status.get("model"):  # a registry model: what its URI resolved to, e.g. iris@champion → v7
        lines.append(f"Model:      {status['model']}")
    if not spec.get("rollout"):
        return "\n".join([*lines, "Rollout:    none (no spec.rollout: weights are set by hand, or with set-weight)"])
    paused = " (held by kubectl mlmodel pause)" if rollout.get("paused") else ""
    lines += [
        f"Phase:      {rollout.get('phase', 'Unknown')}{paused}",
        f"Step:       {rollout.get('step', '')}",
        f"Message:    {rollout.get('message', '')}",
        "",
    ]
    index, rolling = rollout.get("currentStepIndex", 0), rollout.get("phase") in ("Progressing", "Paused")
    steps = spec["rollout"]["steps"]
    marks = ["done" if i < index else "<- now" if i == index and rolling else "" for i in range(len(steps))]
    lines += _table(["STEP", "", ""], [(i + 1, _step(s), marks[i]) for i, s in enumerate(steps)])
    analysis = rollout.get("analysis")
    if analysis:
        last = analysis.get("lastInterval") or {}
        lines += [
            "",
            f"Analysis:   {analysis.get('passedIntervals', 0)} passed, {analysis.get('failedIntervals', 0)} failed,"
            f" {analysis.get('inconclusiveIntervals', 0)} inconclusive intervals; the last"
            f" {last.get('result', 'not judged yet')}"
            + (f", {last.get('errors', 0)} 5xx of {last.get('requests', 0)} answers" if last else "")
            + (f", {last['compared']} copies compared" if last.get("compared") else ""),
        ]
        rows = [
            (m["name"], m.get("value", "-"), m["threshold"], {True: "yes", False: "NO"}.get(m.get("passed"), "-"))
            for m in last.get("metrics") or []
        ]
        lines += _table(["METRIC", "VALUE", "THRESHOLD", "PASSED"], rows) if rows else []
    return "\n".join([*lines, "", render_history(md)])


def render_history(md: Mapping[str, Any]) -> str:
    """The revisions ``md`` keeps, oldest first."""
    rows = [
        (
            r["revision"],
            r.get("modelUri", ""),
            (r.get("modelSha256") or "-")[:12],
            r.get("image", ""),
            r.get("created", ""),
            r.get("outcome", ""),
        )
        for r in (md.get("status") or {}).get("revisions") or []
    ]
    if not rows:
        return f"{md['metadata']['name']} has no revisions (they are kept with spec.rollout)"
    return "\n".join(_table(["REVISION", "MODEL", "DIGEST", "IMAGE", "CREATED", "OUTCOME"], rows))
