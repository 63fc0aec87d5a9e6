"""The ModelDeployment's status from what its children report. Pure: no API calls, the clock is passed in."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlmodel_operator import names, traffic
from mlmodel_operator.spec import ModelDeployment

READY, PROGRESSING, DEGRADED = "Ready", "Progressing", "Degraded"
INVALID_SPEC = "InvalidSpec"
MODEL_LOAD_FAILED = "ModelLoadFailed"
_IMAGE_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
_CONFIG_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError", "RunContainerError"})


@dataclass(frozen=True)
class Failure:
    reason: str
    message: str


@dataclass(frozen=True)
class Observed:
    """What one variant's Deployment and pods say."""

    name: str
    exists: bool = False
    desired: int = 0
    ready: int = 0
    updated: int = 0
    current: bool = False  # the Deployment controller has seen the latest spec
    failure: Failure | None = None


def observe(name: str, deployment: Mapping[str, Any] | None, pods: Iterable[Mapping[str, Any]]) -> Observed:
    """Summarize a variant's Deployment (``None`` if absent) and its pods."""
    if deployment is None:
        return Observed(name, failure=pod_failure(pods))
    spec, st, meta = deployment.get("spec", {}), deployment.get("status", {}), deployment.get("metadata", {})
    return Observed(
        name=name,
        exists=True,
        desired=int(spec.get("replicas", 1)),
        ready=int(st.get("readyReplicas", 0)),
        updated=int(st.get("updatedReplicas", 0)),
        current=int(st.get("observedGeneration", 0)) >= int(meta.get("generation", 0)),
        failure=pod_failure(pods),
    )


def pod_failure(pods: Iterable[Mapping[str, Any]]) -> Failure | None:
    """Why the server containers of these pods fail, from their termination messages and waiting reasons."""
    for pod in pods:
        for status in pod.get("status", {}).get("containerStatuses", []) or []:
            if status.get("name") != names.SERVER_CONTAINER or status.get("ready"):
                continue
            state, last = status.get("state", {}), status.get("lastState", {})
            waiting = state.get("waiting") or {}
            terminated = state.get("terminated") or last.get("terminated") or {}
            if waiting.get("reason") in _IMAGE_REASONS:
                return Failure("ImagePullFailed", waiting.get("message") or waiting["reason"])
            if waiting.get("reason") in _CONFIG_REASONS:
                return Failure(waiting["reason"], waiting.get("message") or waiting["reason"])
            if terminated and terminated.get("exitCode", 0) != 0:
                message = (terminated.get("message") or "").strip()
                return Failure(MODEL_LOAD_FAILED, message or f"the server exited with code {terminated['exitCode']}")
    return None


def _ready(seen: Observed) -> bool:
    """The variant runs its latest spec with every desired replica ready (zero, if scaled to zero)."""
    return seen.exists and seen.current and seen.updated >= seen.desired and seen.ready >= seen.desired


def compute(
    md: ModelDeployment,
    observed: Sequence[Observed],
    previous: Sequence[Mapping[str, Any]],
    now: str,
) -> dict[str, Any]:
    """The status to write: conditions (transition times kept when unchanged), variants, URL, columns."""
    failing = [(o.name, o.failure) for o in observed if o.failure is not None]
    waiting = [o for o in observed if not _ready(o)]
    if failing:
        name, failure = failing[0]
        assert failure is not None
        text = f"variant {name}: {failure.message}"
        ready = (False, failure.reason, text)
        degraded = (True, failure.reason, text)
    elif waiting:
        text = "; ".join(f"variant {o.name}: {o.ready}/{o.desired} replicas ready" for o in waiting)
        ready = (False, "Waiting", text)
        degraded = (False, "NoFailures", "no variant reports a failure")
    else:
        ready = (True, "AllVariantsReady", f"{len(observed)} variant(s) ready")
        degraded = (False, "NoFailures", "no variant reports a failure")
    progressing = (
        (True, "RollingOut", "waiting for " + ", ".join(o.name for o in waiting))
        if waiting
        else (False, "RolloutComplete", "every variant runs its latest spec")
    )
    conditions = [
        _condition(kind, value, md.generation, previous, now)
        for kind, value in ((READY, ready), (PROGRESSING, progressing), (DEGRADED, degraded))
    ]
    return {
        "observedGeneration": md.generation,
        "conditions": conditions,
        "variants": [
            {
                "name": v.name,
                "weight": v.weight,
                "desiredReplicas": o.desired,
                "readyReplicas": o.ready,
                "modelUri": v.model_uri,
                **({"modelSha256": v.model_sha256} if v.model_sha256 else {}),
            }
            for v, o in zip(md.variants, observed, strict=True)
        ],
        "url": f"http://{names.entry_service(md.name)}.{md.namespace}.svc.cluster.local",
        "weights": traffic.weights(md),
        "replicas": f"{sum(o.ready for o in observed)}/{sum(o.desired for o in observed)}",
        "routing": traffic.routing_note(md),
    }


def invalid(generation: int, message: str, previous: Sequence[Mapping[str, Any]], now: str) -> dict[str, Any]:
    """The status of a spec that cannot be reconciled."""
    values = (
        (READY, (False, INVALID_SPEC, message)),
        (PROGRESSING, (False, INVALID_SPEC, message)),
        (DEGRADED, (True, INVALID_SPEC, message)),
    )
    return {
        "observedGeneration": generation,
        "conditions": [_condition(kind, value, generation, previous, now) for kind, value in values],
    }


def condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    """The condition of type ``kind`` in ``status``, if any."""
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), None)


def _condition(
    kind: str, value: tuple[bool, str, str], generation: int, previous: Sequence[Mapping[str, Any]], now: str
) -> dict[str, Any]:
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
