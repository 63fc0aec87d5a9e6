"""The ModelDeployment's status from what its children report. Pure: no API calls, the clock is passed in."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mlmodel_operator import names
from mlmodel_operator.router import traffic
from mlmodel_operator.spec import ModelDeployment

READY, PROGRESSING, DEGRADED = "Ready", "Progressing", "Degraded"
INVALID_SPEC = "InvalidSpec"
MODEL_LOAD_FAILED = "ModelLoadFailed"
ROUTER_FAILED = "RouterFailed"
ROUTING_UPDATE = "RoutingUpdate"
NAME_CONFLICT = "NameConflict"
APPLY_FAILED = "ApplyFailed"
DELETE_FAILED = "DeleteFailed"
LIST_FAILED = "ListFailed"
QUOTA_EXCEEDED = "QuotaExceeded"
UNSCHEDULABLE = "Unschedulable"
OOM_KILLED = "OOMKilled"
REPLICA_FAILURE = "ReplicaFailure"
ROUTER = "router"
TIMESTAMP = "%Y-%m-%dT%H:%M:%SZ"  # the status's times (conditions, rollout): UTC, to the second


def seconds_between(start: str, end: str) -> float:
    """Seconds from ``start`` to ``end``, two of the status's times (or the API's)."""
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


_IMAGE_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
_CONFIG_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError", "RunContainerError"})
_QUOTA = "exceeded quota"
_DONE = frozenset({"Succeeded", "Failed"})  # pod phases of pods that will never serve again
_URI = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def redact_uri(uri: str) -> str:
    """``uri`` fit for status and Events: without ``user:password@``, query string (presigned URLs, tokens)
    or fragment."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparseable URI>"
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def _redact_uris(text: str) -> str:
    """``text`` (a container's termination message) with every URI in it redacted."""
    return _URI.sub(lambda found: redact_uri(found.group()), text)


@dataclass(frozen=True)
class Failure:
    reason: str
    message: str


def conflict(kind: str, name: str) -> Failure:
    """An object the operator wants exists, but another owner (or none) controls it: it is left alone."""
    return Failure(
        NAME_CONFLICT,
        f"{kind} {name} already exists and is not controlled by this ModelDeployment: "
        "it is left untouched; delete or rename it",
    )


def refused(verb: str, kind: str, name: str, code: int, message: str) -> Failure:
    """The API server refused to ``verb`` (apply, delete, list) an object (or a kind): a quota's 403, or any other."""
    reason = {"apply": APPLY_FAILED, "delete": DELETE_FAILED, "list": LIST_FAILED}[verb]
    if code == 403 and _QUOTA in message:
        reason = QUOTA_EXCEEDED
    return Failure(reason, f"{' '.join(filter(None, (verb, kind, name)))}: {message}")


@dataclass(frozen=True)
class Observed:
    """What one variant's Deployment and pods say."""

    name: str
    exists: bool = False
    desired: int = 0
    ready: int = 0
    updated: int = 0
    total: int = 0  # pods of every revision, old and terminating ones included
    current: bool = False  # the Deployment controller has seen the latest spec
    failure: Failure | None = None

    @property
    def rolled_out(self) -> bool:
        """Every pod runs the latest spec and is ready; no pod of an older revision is left."""
        return _ready(self) and self.total <= self.desired


@dataclass(frozen=True)
class Routing:
    """How traffic reaches the variants: the weights in effect, and the router if there is one."""

    weights: Mapping[str, int]
    router: Observed | None = None  # None: the entry Service selects a variant's pods itself
    via_router: bool = False  # the entry Service selects the router's pods
    behind: tuple[str, ...] = ()  # the running router pods that do not report routing by these weights (reaching all)

    @property
    def caught_up(self) -> bool:
        """Every router pod (if any) runs the latest configuration and routes by these weights, reaching every ready
        variant's Service."""
        return self.router is None or (self.router.rolled_out and not self.behind)


def observe(
    name: str,
    deployment: Mapping[str, Any] | None,
    pods: Iterable[Mapping[str, Any]],
    container: str = names.SERVER_CONTAINER,
) -> Observed:
    """Summarize a variant's (or the router's) Deployment (``None`` if absent) and its pods.

    A terminating pod counts until it is gone: until then it may still take connections (its
    preStop waits for kube-proxy to stop sending them), so a rollout is not over before.
    """
    pods = list(pods)
    crash = MODEL_LOAD_FAILED if container == names.SERVER_CONTAINER else ROUTER_FAILED
    if deployment is None:
        return Observed(name, failure=pod_failure(pods, container, crash))
    spec, st, meta = deployment.get("spec", {}), deployment.get("status", {}), deployment.get("metadata", {})
    return Observed(
        name=name,
        exists=True,
        desired=int(spec.get("replicas", 1)),
        ready=int(st.get("readyReplicas", 0)),
        updated=int(st.get("updatedReplicas", 0)),
        total=max(int(st.get("replicas", 0)), sum(p.get("status", {}).get("phase") not in _DONE for p in pods)),
        current=int(st.get("observedGeneration", 0)) >= int(meta.get("generation", 0)),
        failure=_replica_failure(st) or pod_failure(pods, container, crash, _memory_limit(spec, container)),
    )


def _memory_limit(spec: Mapping[str, Any], container: str) -> str | None:
    """The memory limit of ``container`` in a Deployment's pod template (the cached pods keep no spec)."""
    containers = spec.get("template", {}).get("spec", {}).get("containers") or []
    found: Mapping[str, Any] = next((c for c in containers if c.get("name") == container), {})
    limit = (found.get("resources") or {}).get("limits", {}).get("memory")
    return str(limit) if limit is not None else None


def _replica_failure(deployment_status: Mapping[str, Any]) -> Failure | None:
    """Pods that could not be created at all (a quota, an admission webhook), from the Deployment's conditions."""
    for cond in deployment_status.get("conditions") or []:
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            message = str(cond.get("message") or cond.get("reason") or "pods cannot be created")
            return Failure(QUOTA_EXCEEDED if _QUOTA in message else REPLICA_FAILURE, message)
    return None


def pod_failure(
    pods: Iterable[Mapping[str, Any]],
    container: str = names.SERVER_CONTAINER,
    crash: str = MODEL_LOAD_FAILED,
    memory_limit: str | None = None,
) -> Failure | None:
    """Why ``container`` fails in these pods, from termination messages and waiting reasons, or why a pod
    cannot be scheduled; a container killed for its memory names ``memory_limit``."""
    for pod in pods:
        for cond in pod.get("status", {}).get("conditions", []) or []:
            if (cond.get("type"), cond.get("status"), cond.get("reason")) == ("PodScheduled", "False", UNSCHEDULABLE):
                return Failure(UNSCHEDULABLE, cond.get("message") or UNSCHEDULABLE)
        for status in pod.get("status", {}).get("containerStatuses", []) or []:
            if status.get("name") != container or status.get("ready"):
                continue
            state, last = status.get("state", {}), status.get("lastState", {})
            waiting = state.get("waiting") or {}
            terminated = state.get("terminated") or last.get("terminated") or {}
            if waiting.get("reason") in _IMAGE_REASONS:
                return Failure("ImagePullFailed", waiting.get("message") or waiting["reason"])
            if waiting.get("reason") in _CONFIG_REASONS:
                return Failure(waiting["reason"], waiting.get("message") or waiting["reason"])
            if terminated.get("reason") == OOM_KILLED:
                within = f" of {memory_limit}" if memory_limit else ""
                return Failure(
                    OOM_KILLED,
                    f"{container} was killed for going over its memory limit{within} (OOMKilled): "
                    "raise resources.limits.memory",
                )
            if terminated and terminated.get("exitCode", 0) != 0:
                message = _redact_uris(terminated.get("message") or "").strip()
                return Failure(crash, message or f"{container} exited with code {terminated['exitCode']}")
    return None


def _ready(seen: Observed) -> bool:
    """The variant runs its latest spec with every desired replica ready (zero, if scaled to zero)."""
    return seen.exists and seen.current and seen.updated >= seen.desired and seen.ready >= seen.desired


def _label(seen: Observed) -> str:
    return "the router" if seen.name == ROUTER else f"variant {seen.name}"  # no variant is called router (CRD)


def compute(
    md: ModelDeployment,
    observed: Sequence[Observed],
    previous: Sequence[Mapping[str, Any]],
    now: str,
    routing: Routing,
    problems: Sequence[Failure] = (),
) -> dict[str, Any]:
    """The status to write: conditions (transition times kept when unchanged), variants, URL, columns.

    ``problems`` are the children the pass could not write (each message names its object); they
    come before what the variants report, and every one of them is in the message.
    """
    router = [routing.router] if routing.router is not None else []
    failing = [(_label(o), o.failure) for o in [*observed, *router] if o.failure is not None]
    # A router rolling out a new configuration still serves: it is waited for only when short of pods.
    waiting = [o for o in observed if not _ready(o)] + [r for r in router if not r.exists or r.ready < r.desired]
    held = f" ({traffic.routing_note(md, routing.weights, routing.via_router)})" if _held(md, routing) else ""
    if problems:
        text = "; ".join(p.message for p in problems) + held
        ready = (False, problems[0].reason, text)
        degraded = (True, problems[0].reason, text)
    elif failing:
        where, failure = failing[0]
        assert failure is not None
        text = f"{where}: {failure.message}{held}"
        ready = (False, failure.reason, text)
        degraded = (True, failure.reason, text)
    elif waiting:
        text = "; ".join(f"{_label(o)}: {o.ready}/{o.desired} replicas ready" for o in waiting)
        ready = (False, "Waiting", text + held)
        degraded = (False, "NoFailures", "no variant reports a failure")
    elif not routing.caught_up and not _was_ready(previous):
        # Ready only once every router pod routes to the ready variants; once Ready, a new split
        # rolling out keeps it (the old router pods serve meanwhile).
        pods = f" ({', '.join(routing.behind)} not yet)" if routing.behind else ""
        ready = (False, "Waiting", f"the router's pods do not route to every ready variant yet{pods}")
        degraded = (False, "NoFailures", "no variant reports a failure")
    else:
        ready = (True, "AllVariantsReady", f"{len(observed)} variant(s) ready")
        degraded = (False, "NoFailures", "no variant reports a failure")
    if problems or failing:
        # A rollout that a failure holds up does not progress (a Deployment past its progress deadline).
        progressing = (False, ready[1], ready[2])
    elif waiting:
        progressing = (True, "RollingOut", "waiting for " + ", ".join(_label(o) for o in waiting))
    elif routing.router is not None and not routing.router.rolled_out:
        weights = traffic.weights(routing.weights)
        progressing = (True, ROUTING_UPDATE, f"the router is rolling out a new configuration (weights {weights})")
    else:
        progressing = (False, "RolloutComplete", "every variant runs its latest spec")
    conditions = [
        new_condition(kind, value, md.generation, previous, now)
        for kind, value in ((READY, ready), (PROGRESSING, progressing), (DEGRADED, degraded))
    ]
    return {
        "observedGeneration": md.generation,
        "conditions": conditions,
        "variants": [
            {
                "name": v.name,
                "weight": routing.weights[v.name],
                "desiredReplicas": o.desired,
                "readyReplicas": o.ready,
                "modelUri": redact_uri(v.model_uri),
                **({"modelSha256": v.model_sha256} if v.model_sha256 else {}),
            }
            for v, o in zip(md.variants, observed, strict=True)
        ],
        "url": f"http://{names.entry_service(md.name)}.{md.namespace}.svc.cluster.local",
        "weights": traffic.weights(routing.weights),
        "replicas": f"{sum(o.ready for o in observed)}/{sum(o.desired for o in observed)}",
        "routing": traffic.routing_note(md, routing.weights, routing.via_router),
    }


def _was_ready(previous: Sequence[Mapping[str, Any]]) -> bool:
    return any(c.get("type") == READY and c.get("status") == "True" for c in previous)


def _held(md: ModelDeployment, routing: Routing) -> bool:
    """Some variant gets less than its spec weight, because it is not ready."""
    return any(routing.weights[v.name] != v.weight for v in md.variants)


def invalid(
    generation: int, message: str, previous: Sequence[Mapping[str, Any]], now: str, reason: str = INVALID_SPEC
) -> dict[str, Any]:
    """The status of a spec that cannot be reconciled (or served: a registry model not resolved)."""
    values = (
        (READY, (False, reason, message)),
        (PROGRESSING, (False, reason, message)),
        (DEGRADED, (True, reason, message)),
    )
    return {
        "observedGeneration": generation,
        "conditions": [new_condition(kind, value, generation, previous, now) for kind, value in values],
    }


def condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    """The condition of type ``kind`` in ``status``, if any."""
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), None)


def new_condition(
    kind: str, value: tuple[bool, str, str], generation: int, previous: Sequence[Mapping[str, Any]], now: str
) -> dict[str, Any]:
    """Condition ``kind`` at ``value`` (status, reason, message), its transition time kept from ``previous``."""
    flag, reason, message = value
    text = "True" if flag else "False"
    before = next((c for c in previous if c.get("type") == kind), None)
    since = before["lastTransitionTime"] if before and before.get("status") == text else now
    return {
        "type": kind,
        "status": text,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }
