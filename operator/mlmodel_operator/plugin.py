"""``kubectl mlmodel``: watch and drive a ModelDeployment's rollout, through the Kubernetes API only, as the user of
the current kubeconfig (a user with ``edit`` in the namespace may: the chart aggregates ModelDeployments into it).

A person's action on a rollout (promote, abort, retry, pause, resume) is the annotation ``actions`` describes: the
operator acts on it once, and this waits a few seconds to say what came of it. ``undo`` applies a recorded
revision's spec again; ``set-weight`` edits the weights of a ModelDeployment without ``spec.rollout``. What is
shown is ``render_status`` and ``render_history``, pure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from mlmodel_operator import actions, names

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
        "--full", action="store_true", help="promote now: skip every step left, and the analysis"
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
        api, namespace = _connect(args.context, args.namespace)
        print(_run(api, namespace, args))
    except PluginError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _connect(context: str | None, namespace: str | None) -> tuple[client.CustomObjectsApi, str]:
    try:
        config.load_kube_config(context=context)
        contexts, active = config.list_kube_config_contexts()
    except (config.ConfigException, OSError) as err:
        raise PluginError(f"no kubeconfig to use: {err}") from None
    if context is not None:
        active = next(c for c in contexts if c["name"] == context)
    return client.CustomObjectsApi(), namespace or active["context"].get("namespace") or "default"


def _call(what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
    """The API's answer; its message, in one line, if it refuses."""
    try:
        return call(*args, **kwargs)
    except ApiException as err:
        try:
            message = json.loads(err.body)["message"]
        except (TypeError, ValueError, KeyError):
            message = f"{err.status} {err.reason}"
        raise PluginError(f"cannot {what}: {message}") from None


def _get(api: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    return dict(
        _call(
            f"get ModelDeployment {name} in namespace {namespace}",
            api.get_namespaced_custom_object,
            names.GROUP,
            names.VERSION,
            namespace,
            names.PLURAL,
            name,
        )
    )


def _patch(api: client.CustomObjectsApi, md: Mapping[str, Any], body: Any, what: str) -> None:
    meta = md["metadata"]
    _call(
        f"{what} ModelDeployment {meta['name']} in namespace {meta['namespace']}",
        api.patch_namespaced_custom_object,
        names.GROUP,
        names.VERSION,
        meta["namespace"],
        names.PLURAL,
        meta["name"],
        body,
        _content_type="application/json-patch+json" if isinstance(body, list) else "application/merge-patch+json",
    )


def _run(api: client.CustomObjectsApi, namespace: str, args: argparse.Namespace) -> str:
    md = _get(api, namespace, args.name)
    if args.command == "status":
        while args.watch:
            print("\033[2J\033[H" + render_status(md), flush=True)
            time.sleep(WATCH_SECONDS)
            md = _get(api, namespace, args.name)
        return render_status(md)
    if args.command == "history":
        return render_history(md)
    if args.command == "undo":
        item, number = undo_variant(md, args.to_revision)
        _patch(api, md, _guarded(md, [{"op": "replace", "path": "/spec/variants/0", "value": item}]), "undo")
        return f"{args.name}: revision {number}'s spec applied again ({item.get('modelUri')})"
    if args.command == "set-weight":
        _patch(api, md, _guarded(md, weight_patch(md, args.weights)), "set the weights of")
        return f"{args.name}: weights {' '.join(args.weights)}"
    verb = actions.PROMOTE_FULL if args.command == "promote" and args.full else args.command
    action = actions.Action(verb, action_revision(md, verb), f"{time.time_ns():x}")
    annotations = {"metadata": {"annotations": {names.ANNOTATION_ROLLOUT_ACTION: str(action)}}}
    _patch(api, md, annotations, verb)
    deadline = time.monotonic() + ACKNOWLEDGED_SECONDS
    while time.monotonic() < deadline:
        rollout = (_get(api, namespace, args.name).get("status") or {}).get("rollout") or {}
        if rollout.get("lastAction") == action.id:
            return f"{args.name}: {verb} revision {action.revision}: {rollout.get('message', '')}"
        time.sleep(0.25)
    return f"{args.name}: {verb} revision {action.revision} asked; the operator has not acted on it yet"


def _guarded(md: Mapping[str, Any], ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``ops`` as a JSON patch that applies only to the version read (a concurrent edit makes it fail)."""
    return [{"op": "test", "path": "/metadata/resourceVersion", "value": md["metadata"]["resourceVersion"]}, *ops]


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
    weights = {v["name"]: int(v.get("weight", 0)) for v in md["spec"]["variants"]}
    for pair in pairs:
        variant, _, percent = pair.partition("=")
        if variant not in weights:
            raise PluginError(f"{name} has no variant {variant!r} (its variants: {', '.join(variants)})")
        if not percent.isdigit() or int(percent) > 100:
            raise PluginError(f"{pair!r}: a weight is VARIANT=PERCENT, a whole number from 0 to 100")
        weights[variant] = int(percent)
    if sum(weights.values()) != 100:
        shown = ", ".join(f"{v}={w}" for v, w in weights.items())
        raise PluginError(f"weights must sum to 100, these sum to {sum(weights.values())} ({shown})")
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
