"""One level-based pass: make the children match the spec, then read back how they are doing.

Writes happen only where the live state differs from the desired state, so a steady
ModelDeployment costs reads and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from mlmodel_operator import drift, kube, metrics, names, render, spec, status
from mlmodel_operator.spec import ModelDeployment


@dataclass(frozen=True)
class Outcome:
    status: dict[str, Any]
    changes: tuple[str, ...]

    @property
    def settled(self) -> bool:
        """Nothing left to wait for: every variant is ready, or one has failed."""
        ready = status.condition(self.status, status.READY)
        degraded = status.condition(self.status, status.DEGRADED)
        return bool(ready and ready["status"] == "True") or bool(degraded and degraded["status"] == "True")


def reconcile(md: ModelDeployment, previous: Mapping[str, Any], now: str) -> Outcome:
    """Apply what drifted, delete what is no longer wanted, and compute the status.

    One list per child kind serves both: what is wanted is compared with it, what is left
    over (and owned by this ModelDeployment) is deleted.
    """
    api_versions = {kind: api_version for api_version, kind in kube.CHILD_KINDS}
    found = {
        (kind, live["metadata"]["name"]): live
        for api_version, kind in kube.CHILD_KINDS
        for live in kube.list_objects(api_version, kind, md.namespace, names.owned_labels(md.name))
    }
    changes: list[str] = []
    deployments: dict[str, dict[str, Any] | None] = {}
    for obj in render.children(md):
        kind, name = obj["kind"], obj["metadata"]["name"]
        live = found.pop((kind, name), None)
        where = "it was missing (or had lost its labels)" if live is None else drift.drifted(obj, live)
        if where:
            changes.append(f"applied {kind} {name}: " + (where if live is None else f"drift at {where}"))
            live = kube.apply(obj)
        if kind == "Deployment":
            deployments[name] = live
    for (kind, name), live in found.items():  # in CHILD_KINDS order: HPAs before their Deployments
        if md.uid in {ref.get("uid") for ref in live["metadata"].get("ownerReferences") or []}:
            kube.delete(api_versions[kind], kind, md.namespace, name)
            changes.append(f"deleted {kind} {name}: no longer in the spec")
    observed = [
        status.observe(
            v.name,
            deployments.get(names.child(md.name, v.name)),
            kube.list_objects("v1", "Pod", md.namespace, names.selector(md.name, v.name)),
        )
        for v in md.variants
    ]
    return Outcome(status.compute(md, observed, previous.get("conditions") or [], now), tuple(changes))


@dataclass(frozen=True)
class Verdict:
    """What a pass decided: the status to write (``None``: unchanged), and whether to wait or give up."""

    status: dict[str, Any] | None
    settled: bool
    invalid: str | None = None


def sync(body: Mapping[str, Any], *, default_image: str, now: str, memory: MutableMapping[str, Any]) -> Verdict:
    """Parse, reconcile, and record Events for every change and every new failure.

    ``memory`` outlives a pass (kopf's per-object memo): it holds the last status computed
    here, so Events fire once per transition even when the next pass still sees a stale body.
    """
    actual: Mapping[str, Any] = body.get("status") or {}
    previous: Mapping[str, Any] = memory.get("status") or actual
    try:
        md = spec.parse(body, default_image=default_image)
    except spec.SpecError as err:
        message = str(err)
        new = status.invalid(int(body["metadata"].get("generation", 0)), message, previous.get("conditions") or [], now)
        before = status.condition(previous, status.READY)
        if not before or before.get("message") != message:  # once per distinct problem, not per pass
            kube.event(body, "Warning", status.INVALID_SPEC, message, now)
        memory["status"] = new
        return Verdict(new if _changed(actual, new) else None, settled=True, invalid=message)
    outcome = reconcile(md, previous, now)
    for change in outcome.changes:
        metrics.CHANGES.labels(change.split()[0]).inc()
        kube.event(body, "Normal", "Applied" if change.startswith("applied") else "Deleted", change, now)
    _transition_events(body, previous, outcome.status, now)
    memory["status"] = outcome.status
    return Verdict(outcome.status if _changed(actual, outcome.status) else None, settled=outcome.settled)


def _changed(previous: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return any(previous.get(key) != value for key, value in new.items())


def _transition_events(body: Mapping[str, Any], previous: Mapping[str, Any], new: Mapping[str, Any], now: str) -> None:
    for kind, wanted, event_type in ((status.DEGRADED, "True", "Warning"), (status.READY, "True", "Normal")):
        after, before = status.condition(new, kind), status.condition(previous, kind)
        if after and after["status"] == wanted and (before is None or before.get("status") != wanted):
            kube.event(body, event_type, after["reason"], after["message"], now)
