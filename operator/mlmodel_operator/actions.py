"""What a person asks of a rollout, through ``kubectl mlmodel`` (or by hand): one annotation on the
ModelDeployment, ``mlmodel.io/rollout-action: "<verb> <revision> <id>"``. Pure.

The operator takes an action once: it records its id in ``status.rollout.lastAction``, so an annotation that
stays (or an operator that restarts) does nothing more. Until then the action is ``pending``, and every event of the
ModelDeployment queues a pass: kopf's ``on.update`` never sees it, as kopf leaves every annotation under its own
storage's prefix (``mlmodel.io/``) out of what it compares. The revision is the one the person saw: an action for a
revision the rollout has left behind is ignored, with an Event that says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlmodel_operator import names

PROMOTE, PROMOTE_FULL, ABORT, RETRY, PAUSE, RESUME = "promote", "promote-full", "abort", "retry", "pause", "resume"
VERBS = (PROMOTE, PROMOTE_FULL, ABORT, RETRY, PAUSE, RESUME)


class ActionError(ValueError):
    """The annotation is not an action."""


@dataclass(frozen=True)
class Action:
    verb: str
    revision: int
    id: str

    def __str__(self) -> str:
        return f"{self.verb} {self.revision} {self.id}"


def parse(text: str) -> Action:
    """The action an annotation's value holds."""
    parts = text.split()
    if len(parts) != 3 or parts[0] not in VERBS or not parts[1].isdigit():
        raise ActionError(f"expected '<{'|'.join(VERBS)}> <revision> <id>', got {text!r}")
    return Action(parts[0], int(parts[1]), parts[2])


def pending(body: Mapping[str, Any]) -> bool:
    """``body`` (a ModelDeployment with ``spec.rollout``) holds an action the operator has not taken yet: its id is
    not ``status.rollout.lastAction``, or it is no action at all (a pass says so)."""
    text = ((body.get("metadata") or {}).get("annotations") or {}).get(names.ANNOTATION_ROLLOUT_ACTION)
    if text is None or not (body.get("spec") or {}).get("rollout"):
        return False
    try:
        taken = parse(text).id
    except ActionError:
        return True
    return bool(taken != ((body.get("status") or {}).get("rollout") or {}).get("lastAction"))
