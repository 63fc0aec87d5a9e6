"""A person's action on a rollout (``mlmodel.io/rollout-action``): parsed, and pending until the operator takes it."""

from __future__ import annotations

from typing import Any, cast

import kopf
import pytest
from mlmodel_operator import actions, names


def _md(action: str | None, last: str | None = None, rollout: bool = True) -> dict[str, Any]:
    annotations = {} if action is None else {names.ANNOTATION_ROLLOUT_ACTION: action}
    spec: dict[str, Any] = {"variants": [{"name": "stable"}]} | ({"rollout": {"steps": []}} if rollout else {})
    status = {"rollout": {"phase": "Paused", "lastAction": last}} if last else {}
    return {"metadata": {"name": "iris", "annotations": annotations}, "spec": spec, "status": status}


@pytest.mark.parametrize(
    ("body", "pending"),
    [
        (_md(None), False),
        (_md("pause 2 a1"), True),  # never taken
        (_md("pause 2 a1", last="a0"), True),  # an earlier one was
        (_md("pause 2 a1", last="a1"), False),  # taken: an annotation that stays does nothing more
        (_md("pause 2 a1", rollout=False), False),  # no rollout to act on
        (_md("pause two"), True),  # a pass reports it (Ready=False, naming the annotation)
    ],
)
def test_an_action_is_pending_until_its_id_is_the_last_action_taken(body: dict[str, Any], pending: bool) -> None:
    assert actions.pending(body) is pending


def test_kopf_compares_no_annotation_under_its_storage_prefix_so_update_handlers_never_see_an_action() -> None:
    """Why ``handlers.on_event`` queues a pass for a pending action: kopf's diff base, with the prefix the operator
    gives it, leaves ``mlmodel.io/rollout-action`` out of the essence it compares once it has marked the prefix as its
    own (``mlmodel.io/kopf-managed``, written with its first record), so no ``on.update`` fires."""
    storage = kopf.AnnotationsDiffBaseStorage(prefix=names.GROUP)
    before = _md("pause 2 a1")
    before["metadata"]["annotations"][f"{names.GROUP}/kopf-managed"] = "yes"
    after = {**before, "metadata": {**before["metadata"], "annotations": dict(before["metadata"]["annotations"])}}
    after["metadata"]["annotations"][names.ANNOTATION_ROLLOUT_ACTION] = "promote 2 a2"
    essences = [storage.build(body=kopf.Body(cast(kopf.RawBody, raw))) for raw in (before, after)]
    assert essences[0] == essences[1], essences
