"""One level-based pass: make the children match the spec, then read back how they are doing.

Writes happen only where the live state differs from the desired state, and reads come from the
watches' cache, so a steady ModelDeployment costs no request at all.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, replace
from typing import Any

from mlmodel_operator import (
    analysis,
    cache,
    drift,
    kube,
    measure,
    metrics,
    names,
    netpol,
    pins,
    render,
    resolve,
    rollout,
    spec,
    status,
)
from mlmodel_operator.config import Registry
from mlmodel_operator.router import objects, traffic
from mlmodel_operator.spec import ModelDeployment
from mlmodel_operator.status import Observed

LOG = logging.getLogger(__name__)
AGAIN_SECONDS = 0.5  # a rollout in flight passes again this soon when a pass saw its pods change
# What the entry Service stopped leading to keeps serving this long after it moved, as Argo Rollouts' blue-green
# scaleDownDelaySeconds (30 s there): kube-proxy on every node follows the move a moment later, and until it has, new
# connections still go to the pods it left. A CI host once took longer than their 5 s preStop drain.
LEFT_SERVING_SECONDS = 15.0


@dataclass(frozen=True)
class Outcome:
    status: dict[str, Any]
    changes: tuple[str, ...]
    retry: bool = False  # the API server refused a write: try again soon, not at the next resync
    weights: str | None = None  # the router's routing document (None: no router), for the weights endpoint
    observed: tuple[Observed, ...] = ()  # how each variant's pods are doing
    routed: bool = False  # every router pod (if any) runs this pass's configuration and routes by its document
    wake: float | None = None  # what the entry Service left is due to go this many seconds from now
    behind: tuple[str, ...] = ()  # the running router pods that have not reported routing by it (reaching it all)

    @property
    def settled(self) -> bool:
        """Nothing left to wait for: every variant is ready (or one has failed) and the router has rolled out."""
        ready = status.condition(self.status, status.READY)
        degraded = status.condition(self.status, status.DEGRADED)
        progressing = status.condition(self.status, status.PROGRESSING)
        if progressing and progressing["reason"] == status.ROUTING_UPDATE:
            return False
        return bool(ready and ready["status"] == "True") or bool(degraded and degraded["status"] == "True")


Key = tuple[str, str]  # (kind, name)


def reconcile(
    md: ModelDeployment,
    previous: Mapping[str, Any],
    now: str,
    router_image: str,
    store: cache.Store,
    access: netpol.Access | None = None,
    source: tuple[str, int] | None = None,
    problems: tuple[status.Failure, ...] = (),
    reports: Mapping[str, tuple[int, bool]] | None = None,
) -> Outcome:
    """Apply what drifted, delete what is no longer wanted, and compute the status.

    The children and pods are read from ``store`` (what the watches saw), one list per child kind
    for both: what is wanted is compared with it, what is left over (and owned by this
    ModelDeployment) is deleted. A child missing there is read from the API server, since it may
    exist without the operator's labels (someone else's), unless no object has its name. The order
    keeps traffic flowing: the variants first; then the router, configured with the ready variants
    only; then the entry Service, moved only to something ready; and what is no longer wanted but
    still serves (a removed variant, the router of a ModelDeployment now down to one variant) is
    deleted only once traffic has moved off it: the entry Service leads elsewhere, and every router pod
    routes by a document without it (``reports``: what each router pod last told the weights endpoint, its
    serial and whether it reaches every address in it). With ``access``, NetworkPolicies let only the router
    (and monitoring) reach the servers once the entry Service leads to the router, and before it leads
    elsewhere; without, those applied before are deleted. The routers follow their routes from ``source`` (the
    operator's weights endpoint), and from their weights ConfigMap. ``problems`` happened before the pass (a
    registry's lookups).
    """
    run = _Pass(md, store)
    run.problems.extend(problems)
    live, observed = _variants(run)
    routed = _router(run, live, observed, router_image, source, reports or {})
    entry = run.found.get(("Service", names.entry_service(md.name)))
    behind_router = routed.target is None and entry is not None and _led_to(entry) == status.ROUTER
    for policy in netpol.network_policies(md, access, behind_router) if access is not None else []:
        run.ensure(policy)
    stale = _stale(run)
    since = _entry(run, routed, observed, stale, now)
    routing = status.Routing(routed.weights, routed.router, routed.target is None and routed.arrived, routed.behind)
    wake = _prune(run, routed.arrived and routing.caught_up, stale, status.seconds_between(since, now))
    conditions = previous.get("conditions") or []
    return Outcome(
        status.compute(md, observed, conditions, now, routing, run.problems),
        tuple(run.changes),
        bool(run.refused),
        routed.document,
        tuple(observed),
        routing.caught_up,
        wake,
        routed.behind,
    )


class _Pass:
    """One pass's reads and writes, and what they came to: the children listed and not yet wanted
    (``found``), the changes made, the failures for the conditions, and the kinds of refused writes."""

    def __init__(self, md: ModelDeployment, store: cache.Store) -> None:
        self.md, self.store = md, store
        self.changes: list[str] = []
        self.problems: list[status.Failure] = []
        self.refused: list[str] = []
        lists = {kind: self.listed(v, kind, names.owned_labels(md.name)) for v, kind in kube.CHILD_KINDS}
        # A kind that could not be listed is read object by object, and nothing of it is deleted.
        self.complete = all(items is not None for items in lists.values())  # else what is stale is not known
        self.found: dict[Key, dict[str, Any]] = {
            (kind, live["metadata"]["name"]): live for kind, items in lists.items() for live in items or []
        }

    def listed(self, api_version: str, kind: str, labels: Mapping[str, str]) -> list[dict[str, Any]] | None:
        """The objects of ``kind`` with ``labels``, as last watched; ``None`` (and a problem) while the
        API server refuses to list the kind."""
        refused = self.store.error(kind)
        if refused is not None:
            self.problems.append(status.refused("list", kind, "", *refused))
            return None
        return self.store.list_objects(api_version, kind, self.md.namespace, labels)

    def ensure(self, rendered: dict[str, Any]) -> dict[str, Any] | None:
        """The live object once it holds ``rendered``; ``None`` (and a problem) if it is someone else's or refused."""
        md, obj = self.md, drift.stamp(rendered)
        kind, name = obj["kind"], obj["metadata"]["name"]
        live = self.found.pop((kind, name), None)
        try:
            if live is None and not self.store.names.free(kind, md.namespace, name):
                live = kube.get(obj["apiVersion"], kind, md.namespace, name)  # never take over what we did not make
            if live is not None and not _controlled(live, md.uid):
                self.problems.append(status.conflict(kind, name))
                return None
            replicas = _handover(obj, live)
            if live is None:
                where: str | None = "it was missing"
            elif replicas is not None:
                where = f"handed its {replicas} replicas over to the autoscaler"
            else:
                where = drift.why(obj, live)
            if not where:
                return live
            if replicas is not None:
                kube.apply(render.replicas_handover(obj, replicas), names.HANDOVER_MANAGER)
            self.changes.append(f"applied {kind} {name}: {where}")
            applied = kube.apply(obj)
            self.store.put(kind, applied)  # the next pass must not wait for the watch to see it
            self.store.names.put(kind, applied)
            return applied
        except kube.Refused as err:
            self.problems.append(status.refused("apply", kind, name, err.code, err.message))
            self.refused.append(kind)
            return None

    def pods(self, selector: Mapping[str, str]) -> list[dict[str, Any]]:
        return self.listed("v1", "Pod", selector) or []


def _variants(run: _Pass) -> tuple[dict[Key, dict[str, Any] | None], list[status.Observed]]:
    """Apply every variant's children: the live ones by key, and how each variant's pods are doing."""
    md = run.md
    live = {(o["kind"], o["metadata"]["name"]): run.ensure(o) for o in render.variant_children(md)}
    observed = [
        status.observe(
            v.name, live.get(("Deployment", names.child(md.name, v.name))), run.pods(names.selector(md.name, v.name))
        )
        for v in md.variants
    ]
    return live, observed


@dataclass(frozen=True)
class _Routed:
    """Where traffic goes: the weights, the router's state (``None``: no router), the variant the entry
    Service leads to (``None``: the router), whether that target serves yet, the router's routing document, and
    the running router pods that have not said they route by it (reaching every address in it)."""

    weights: Mapping[str, int]
    router: status.Observed | None
    target: str | None
    arrived: bool
    document: str | None = None
    behind: tuple[str, ...] = ()


def _router(
    run: _Pass,
    live: Mapping[Key, dict[str, Any] | None],
    observed: list[status.Observed],
    image: str,
    source: tuple[str, int] | None,
    reports: Mapping[str, tuple[int, bool]],
) -> _Routed:
    """With more than one variant, apply the router and its routes, with the ready variants' Services only (the
    live document while the routes stay, else one with the next serial)."""
    md = run.md
    ready = [o.name for o in observed if o.ready > 0]
    if not md.routed:
        return _Routed(traffic.applied_weights(md, ready), None, md.variants[0].name, bool(ready))
    services = {name: live[("Service", names.child(md.name, name))] for name in ready}
    upstreams = {name: svc["spec"]["clusterIP"] for name, svc in services.items() if svc is not None}
    config = traffic.router_config(md, upstreams, source=source)
    weights = run.found.get(("ConfigMap", names.router_weights(md.name)))
    live_document = ((weights or {}).get("data") or {}).get(names.ROUTER_WEIGHTS_FILE)
    serial, document = traffic.next_document(config.routes, live_document)
    router_live = [run.ensure(obj) for obj in objects.children(md, config, document, image)][2]
    pods = run.pods(names.router_selector(md.name))
    router = status.observe(status.ROUTER, router_live, pods, container=names.ROUTER_CONTAINER)
    running = [p["metadata"]["name"] for p in pods if (p.get("status") or {}).get("phase") == "Running"]
    behind = tuple(sorted(pod for pod in running if reports.get(pod) != (serial, True)))
    return _Routed(config.weights, router, None, router.ready > 0, document, behind)


def _stale(run: _Pass) -> dict[Key, dict[str, Any]]:
    """This ModelDeployment's children that no longer are wanted (none while a kind could not be listed);
    never the entry Service."""
    entry = ("Service", names.entry_service(run.md.name))
    if not run.complete:
        return {}
    return {key: obj for key, obj in run.found.items() if key != entry and run.md.uid in _owners(obj)}


def _entry(
    run: _Pass, routed: _Routed, observed: list[status.Observed], stale: Mapping[Key, dict[str, Any]], now: str
) -> str:
    """Apply the entry Service, unless its target does not serve yet and the live one leads to what does: since
    when it leads where it does."""
    md = run.md
    entry = ("Service", names.entry_service(md.name))
    up = {o.name for o in observed if o.ready} | ({status.ROUTER} if routed.router and routed.router.ready else set())
    up |= {
        _target(obj["metadata"]["labels"]) for (kind, _), obj in stale.items() if kind == "Deployment" and _ready(obj)
    }
    live = run.found.get(entry)
    if not routed.arrived and live is not None and _controlled(live, md.uid) and _led_to(live) in up:
        run.found.pop(entry)  # it keeps leading to pods that serve until what it should lead to is ready
        return _since(live, now)
    since = _since(live, now) if live is not None and _led_to(live) == (routed.target or status.ROUTER) else now
    run.ensure(render.entry_service(md, routed.target, since))
    return since


def _since(service: Mapping[str, Any], now: str) -> str:
    """Since when ``service`` leads where it does: its annotation; else (made before it had one) its creation."""
    meta = service["metadata"]
    since = (meta.get("annotations") or {}).get(names.ANNOTATION_LEADS_SINCE) or meta.get("creationTimestamp")
    return str(since or now)


def _prune(run: _Pass, moved_off: bool, stale: Mapping[Key, dict[str, Any]], moved: float) -> float | None:
    """Delete what is no longer wanted, once traffic has moved off what of it still serves (``moved_off``: the entry
    Service's target serves, and every router pod routes by this pass's routes), and the entry Service moved
    (``moved`` seconds ago) ``LEFT_SERVING_SECONDS`` ago: else in how many seconds it may go."""
    still_serving = any(kind == "Deployment" and _ready(obj) for (kind, _), obj in stale.items())
    if still_serving and not moved_off:
        return None
    if still_serving and moved < LEFT_SERVING_SECONDS:
        return LEFT_SERVING_SECONDS - moved
    api_versions = {kind: api_version for api_version, kind in kube.CHILD_KINDS}
    for kind, name in stale:  # in CHILD_KINDS order: HPAs and PDBs before their targets
        try:
            kube.delete(api_versions[kind], kind, run.md.namespace, name)
        except kube.Refused as err:
            run.problems.append(status.refused("delete", kind, name, err.code, err.message))
            run.refused.append(kind)
            continue
        run.store.drop(kind, stale[(kind, name)])
        run.changes.append(f"deleted {kind} {name}: no longer wanted")
    return None


def _owners(obj: Mapping[str, Any]) -> set[str]:
    return {ref.get("uid", "") for ref in obj["metadata"].get("ownerReferences") or []}


def _controlled(obj: Mapping[str, Any], uid: str) -> bool:
    """``obj`` is this ModelDeployment's: its controller reference has the ModelDeployment's uid."""
    refs = obj["metadata"].get("ownerReferences") or []
    return any(ref.get("controller") and ref.get("uid") == uid for ref in refs)


def _handover(desired: Mapping[str, Any], live: Mapping[str, Any] | None) -> int | None:
    """The live replicas to hand over when the operator stops applying a Deployment's replicas (an HPA
    now owns them) but still owns the field: applying without them would drop the Deployment to 1."""
    if live is None or desired["kind"] != "Deployment" or "replicas" in desired["spec"]:
        return None
    if not drift.manages(live, names.FIELD_MANAGER, "spec", "replicas"):
        return None
    return int(live["spec"].get("replicas", 1))


def _ready(deployment: Mapping[str, Any]) -> bool:
    return bool((deployment.get("status") or {}).get("readyReplicas"))


def _led_to(service: Mapping[str, Any]) -> str:
    """Where a Service leads: a variant's name, or the router."""
    return _target(service["spec"].get("selector") or {})


def _target(labels: Mapping[str, str]) -> str:
    """What a selector (or a Deployment's labels) leads to: a variant's name, or the router."""
    return labels.get(names.LABEL_VARIANT, status.ROUTER)


@dataclass(frozen=True)
class Verdict:
    """What a pass decided: the status to write (``None``: unchanged), whether to wait or give up, and
    whether to try again soon (a write was refused)."""

    status: dict[str, Any] | None
    settled: bool
    invalid: str | None = None
    retry: bool = False
    weights: str | None = None  # the router's weights document, to publish (None: no router, or a bad spec)
    wake: float | None = None  # a rollout, or a registry's next lookup, wants a pass this many seconds from now


def sync(
    body: Mapping[str, Any],
    *,
    default_image: str,
    router_image: str,
    now: str,
    memory: MutableMapping[str, Any],
    store: cache.Store,
    access: netpol.Access | None = None,
    source: tuple[str, int] | None = None,
    registry: Registry | None = None,
    defaults: spec.Defaults | None = None,
    reports: Mapping[str, tuple[int, bool]] | None = None,
) -> Verdict:
    """Parse, pin the registry's models, reconcile, and record Events for every change and every new failure.

    ``memory`` outlives a pass (kopf's per-object memo): it holds the last status computed
    here, so Events fire once per transition even when the next pass still sees a stale body.
    ``defaults``: the operator's for what a spec leaves unset (its servers' and router's resources).
    ``reports``: what each router pod last told the weights endpoint (``weights.Board.reports``).
    """
    actual: Mapping[str, Any] = body.get("status") or {}
    previous: Mapping[str, Any] = memory.get("status") or actual
    defaults = defaults or spec.Defaults()
    try:
        md = spec.parse(body, default_image=default_image, defaults=defaults)
    except spec.SpecError as err:
        return _unservable(body, actual, previous, memory, status.INVALID_SPEC, str(err), now)
    resolved = None
    if md.registered:
        resolved = resolve.pins_of(md, previous, memory, registry or Registry())
        missing = resolved.missing(md)
        if missing:  # nothing to serve yet: no child changes until it resolves
            problem = resolved.failures[missing[0].name]
            verdict = _unservable(body, actual, previous, memory, problem.reason, problem.message, now)
            return replace(verdict, wake=resolved.wake, invalid=None)
        body = pins.pinned_body(body, resolved.pins, md.mlflow.credentials_secret)
        md = spec.parse(body, default_image=default_image, defaults=defaults)
    plan = None
    if md.rollout is not None:  # the revisions in play, as variants
        raw = body["spec"]["variants"][0]
        # At most one read of the routers a pass, however many times the plan asks.
        routers = functools.cache(functools.partial(_routers, md, store, memory))
        readings = rollout.Readings(memory.get("baseline"), routers, measure.query)
        if md.rollout.analysis is not None and memory.get("baseline"):
            routers()  # every pass of an interval: a router pod that goes before its end still counts
        plan = rollout.plan(md, raw, previous, memory.get("observed") or {}, now, readings)
        memory["baseline"] = plan.baseline
        if plan.baseline is None:
            memory.pop("routers", None)
    problems = resolved.problems if resolved else ()
    target = plan.md if plan else md
    outcome = reconcile(target, previous, now, router_image, store, access, source, problems, reports)
    computed, wake = outcome.status, _sooner(resolved.wake if resolved else None, outcome.wake)
    if resolved is not None:
        computed = {**computed, "models": resolved.entries, "model": pins.summary(resolved.entries)}
    elif previous.get("models"):  # null removes them from the status (merged into the object)
        computed = {**computed, "models": None, "model": None}
    if plan is not None:
        # What the next pass plans from: the revisions' pods, and whether every router pod reaches them.
        seen, memory["observed"] = memory.get("observed"), _observed(outcome)
        wake = _sooner(wake, plan.wake)
        if plan.state.rolling and seen != memory["observed"]:
            wake = min(wake or AGAIN_SECONDS, AGAIN_SECONDS)  # the steps go on from what this pass saw
        computed = rollout.with_rollout(plan, computed, previous.get("conditions") or [], now)
        for kind, reason, message in plan.events:
            _event(body, kind, reason, message, now)
    for change in outcome.changes:
        metrics.CHANGES.labels(change.split()[0]).inc()
    for reason, verb in (("Applied", "applied"), ("Deleted", "deleted")):  # one Event each per pass
        done = [change for change in outcome.changes if change.startswith(verb)]
        if done:
            _event(body, "Normal", reason, "; ".join(done), now)
    _transition_events(body, previous, computed, now)
    memory["status"] = computed
    changed = computed if _changed(actual, computed) else None
    return Verdict(changed, settled=outcome.settled, retry=outcome.retry, weights=outcome.weights, wake=wake)


def _unservable(
    body: Mapping[str, Any],
    actual: Mapping[str, Any],
    previous: Mapping[str, Any],
    memory: MutableMapping[str, Any],
    reason: str,
    message: str,
    now: str,
) -> Verdict:
    """The verdict on a spec that cannot be served (invalid, or a registry model never resolved): no child
    changes, and ``Ready=False`` with ``reason``."""
    conditions = previous.get("conditions") or []
    new = status.invalid(int(body["metadata"].get("generation", 0)), message, conditions, now, reason)
    before = status.condition(previous, status.READY)
    if not before or before.get("message") != message:  # once per distinct problem, not per pass
        _event(body, "Warning", reason, message, now)
    memory["status"] = new
    return Verdict(new if _changed(actual, new) else None, settled=True, invalid=message)


def _sooner(one: float | None, other: float | None) -> float | None:
    return other if one is None else one if other is None else min(one, other)


def _routers(md: ModelDeployment, store: cache.Store, memory: MutableMapping[str, Any]) -> analysis.Snapshot:
    """Every router pod's counts: read now from those running, the last read of those gone since (kept in
    ``memory`` while the analysis's intervals run)."""
    kept = memory.setdefault("routers", {})
    kept.update(measure.routers(store.list_objects("v1", "Pod", md.namespace, names.router_selector(md.name))))
    return dict(kept)


def _observed(outcome: Outcome) -> dict[str, tuple[int, str | None]]:
    """Each variant's ready replicas and failure (reason: message), and under ``rollout.ROUTER`` whether every
    router pod runs this pass's configuration and routes by its document, reaching every address in it, and the
    router pods that do not yet."""
    pods = {
        o.name: (o.ready, f"{o.failure.reason}: {o.failure.message}" if o.failure else None) for o in outcome.observed
    }
    return {rollout.ROUTER: (int(outcome.routed), ", ".join(outcome.behind) or None), **pods}


def _event(body: Mapping[str, Any], kind: str, reason: str, message: str, now: str) -> None:
    """Record an Event; one the API server refuses (its namespace is being deleted, say) is logged,
    and the pass goes on: the status still says what the Event would have."""
    try:
        kube.event(body, kind, reason, message, now)
    except kube.Refused as err:
        meta = body["metadata"]
        LOG.warning("event %s on %s/%s refused: %s", reason, meta["namespace"], meta["name"], err)


def _changed(previous: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return any(_without_nulls(previous.get(key)) != _without_nulls(value) for key, value in new.items())


def _without_nulls(value: Any) -> Any:
    """``value`` without its null fields: a field written as null is one the API server removes."""
    if isinstance(value, Mapping):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _transition_events(body: Mapping[str, Any], previous: Mapping[str, Any], new: Mapping[str, Any], now: str) -> None:
    """An Event when Ready or Degraded turns True, naming the generation: the same words for another spec are
    another transition, not the same one told twice."""
    for kind, wanted, event_type in ((status.DEGRADED, "True", "Warning"), (status.READY, "True", "Normal")):
        after, before = status.condition(new, kind), status.condition(previous, kind)
        if after and after["status"] == wanted and (before is None or before.get("status") != wanted):
            message = f"{after['message']} (generation {after['observedGeneration']})"
            _event(body, event_type, after["reason"], message, now)
