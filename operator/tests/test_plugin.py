"""``kubectl mlmodel``'s pure parts: what it shows (golden), and the patches and actions it makes or refuses.
The commands run by kubectl against a real API server and operator: ``integration/test_kubectl_plugin.py``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from golden_files import assert_golden
from mlmodel_operator import plugin
from mlmodel_operator.plugin import PluginError

GOLDEN = Path(__file__).parent / "golden" / "plugin-status.txt"
TEMPLATE = {"modelUri": "http://model-store/iris.joblib", "modelSha256": "d466" + "0" * 60}


def _md(rollout: bool = True) -> dict[str, Any]:
    steps = [{"shadow": {"duration": "30s"}}, {"setWeight": 20}, {"setWeight": 50}, {"pause": {}}]
    revisions = [
        {
            "revision": 1,
            "modelUri": TEMPLATE["modelUri"],
            "modelSha256": TEMPLATE["modelSha256"],
            "outcome": "Promoted",
        },
        {"revision": 2, "modelUri": "http://model-store/iris-v2.joblib", "outcome": "Promoted"},
        {"revision": 3, "modelUri": "http://model-store/iris-5xx.joblib", "outcome": "Progressing"},
    ]
    for r in revisions:
        r |= {"image": "mlmodel-server:0.1.0", "created": "2026-12-05T22:00:00Z"}
        r["template"] = json.dumps({"variant": {"modelUri": r["modelUri"]}, "image": r["image"]})
    revisions[0]["template"] = json.dumps({"variant": TEMPLATE, "image": "mlmodel-server:0.1.0"})
    metrics = [
        {"name": "successRate", "value": 33.3, "threshold": ">= 95 %", "passed": False},
        {"name": "agreement", "value": 0.98, "threshold": ">= 0.95 of rows", "passed": True},
    ]
    analysis: dict[str, Any] = {"passedIntervals": 0, "failedIntervals": 1, "inconclusiveIntervals": 1}
    analysis["lastInterval"] = {"result": "Failed", "requests": 96, "errors": 64, "compared": 40, "metrics": metrics}
    status: dict[str, Any] = {
        "weights": "r2=80,r3=20",
        "conditions": [{"type": "Ready", "status": "True", "reason": "StableRevisionReady"}],
        "rollout": {
            "phase": "Paused",
            "step": "2/4",
            "currentStepIndex": 1,
            "stableRevision": 2,
            "canaryRevision": 3,
            "message": "step 2/4: waiting for revision 3 to be ready",
            "analysis": analysis,
        },
        "revisions": revisions,
    }
    spec: dict[str, Any] = {"variants": [{"name": "stable", "weight": 100, "replicas": 2, **TEMPLATE}]}
    if rollout:
        spec["rollout"] = {"steps": steps}
    else:
        spec["variants"] = [{"name": "stable", "weight": 90}, {"name": "canary", "weight": 10}]
        status = {"weights": "stable=90,canary=10"}
    meta = {"name": "iris", "namespace": "ml", "resourceVersion": "7", "generation": 3}
    return {"metadata": meta, "spec": spec, "status": status}


def test_status_shows_where_the_rollout_is_its_steps_analysis_and_revisions() -> None:
    assert_golden(GOLDEN, plugin.render_status(_md()) + "\n")
    assert "Rollout:    none" in plugin.render_status(_md(rollout=False))
    registry = _md(rollout=False)
    registry["status"]["model"] = "iris@champion → v7"
    assert "\nModel:      iris@champion → v7\n" in plugin.render_status(registry)


def test_an_action_acts_on_the_revision_rolling_out_and_is_refused_when_there_is_none() -> None:
    assert plugin.action_revision(_md(), "pause") == 3
    with pytest.raises(PluginError, match="rollout is Paused: nothing to retry"):
        plugin.action_revision(_md(), "retry")
    with pytest.raises(PluginError, match=r"no spec\.rollout: there is no rollout to promote"):
        plugin.action_revision(_md(rollout=False), "promote")


def test_undo_applies_a_recorded_revisions_spec_keeping_name_weight_and_replicas() -> None:
    item, number = plugin.undo_variant(_md(), None)  # the last promoted before the stable revision 2
    assert number == 1 and item == {**TEMPLATE, "name": "stable", "weight": 100, "replicas": 2}
    assert plugin.undo_variant(_md(), 3)[0]["modelUri"].endswith("iris-5xx.joblib")
    with pytest.raises(PluginError, match=r"no revision 9 \(it keeps 1, 2, 3\)"):
        plugin.undo_variant(_md(), 9)


def test_set_weight_patches_every_weight_and_refuses_what_the_operator_would() -> None:
    ops = plugin.weight_patch(_md(rollout=False), ["stable=70", "canary=30"])
    assert [(op["path"], op["value"]) for op in ops] == [
        ("/spec/variants/0/weight", 70),
        ("/spec/variants/1/weight", 30),
    ]
    for pairs, error in (
        (["shadow=10"], "no variant 'shadow' (its variants: stable, canary)"),
        (["stable=80"], "weights must sum to 100, these sum to 90 (stable=80, canary=10)"),
        (["stable=lots"], "a whole number from 0 to 100"),
    ):
        with pytest.raises(PluginError, match=error.replace("(", r"\(").replace(")", r"\)")):
            plugin.weight_patch(_md(rollout=False), pairs)
    with pytest.raises(PluginError, match="its steps set the weights"):
        plugin.weight_patch(_md(), ["stable=100"])


@pytest.mark.parametrize(
    ("stderr", "line"),
    [
        (
            'Error from server (NotFound): modeldeployments.mlmodel.io "nope" not found\n',
            'modeldeployments.mlmodel.io "nope" not found',
        ),
        ("Error from server (Forbidden): x is forbidden: User y cannot patch\n", "x is forbidden: User y cannot patch"),
        ('error: context "x" does not exist\n', 'context "x" does not exist'),
        (
            "The connection to the server was refused -\ndid you specify the right host?\n",
            "The connection to the server was refused - did you specify the right host?",
        ),
        ("", "kubectl failed"),
    ],
)
def test_kubectls_refusals_become_one_line(stderr: str, line: str) -> None:
    assert plugin.refusal(stderr) == line


def test_without_kubectl_on_path_the_plugin_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", "")
    assert plugin.main(["status", "iris"]) == 1
    assert capsys.readouterr().err == "error: kubectl is not on PATH: kubectl mlmodel runs it\n"


def test_an_edit_applies_only_to_the_spec_read_whatever_the_operator_wrote_to_the_status_meanwhile() -> None:
    """CI saw `undo` refused when the operator wrote the status between the plugin's read and its patch (that moves
    resourceVersion): the guard is the spec's generation, which only a spec edit moves."""
    ops = plugin.weight_patch(_md(rollout=False), ["stable=70", "canary=30"])
    guarded = plugin._guarded(_md(rollout=False), ops)
    assert guarded == [{"op": "test", "path": "/metadata/generation", "value": 3}, *ops]
