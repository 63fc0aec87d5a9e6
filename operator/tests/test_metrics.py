"""The per-ModelDeployment gauges follow the status, and go when the resource goes."""

from __future__ import annotations

from typing import Any

from mlmodel_operator import metrics
from prometheus_client import REGISTRY


def _condition(kind: str, value: str, reason: str) -> dict[str, str]:
    return {"type": kind, "status": value, "reason": reason}


def _value(series: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(series, labels)


def test_conditions_replace_the_ones_shown_before_and_go_with_the_resource() -> None:
    where = {"namespace": "ml", "name": "metrics-test"}
    metrics.passed("ml", "metrics-test", {"conditions": [_condition("Ready", "False", "Waiting")]})
    assert _value("mlmodel_operator_ready", **where) == 0
    assert _value("mlmodel_operator_condition", **where, type="Ready", status="False", reason="Waiting") == 1
    metrics.passed("ml", "metrics-test", {"conditions": [_condition("Ready", "True", "AllVariantsReady")]})
    assert _value("mlmodel_operator_ready", **where) == 1
    assert _value("mlmodel_operator_condition", **where, type="Ready", status="False", reason="Waiting") is None
    assert (_value("mlmodel_operator_last_reconcile_timestamp_seconds") or 0) > 0
    metrics.gone("ml", "metrics-test")
    assert _value("mlmodel_operator_ready", **where) is None
    assert _value("mlmodel_operator_condition", **where, type="Ready", status="True", reason="AllVariantsReady") is None


def test_a_rollouts_phase_step_weight_and_analysis_are_shown_and_follow_it() -> None:
    where = {"namespace": "ml", "name": "rollout-test"}
    metric = {"name": "successRate", "value": 33.3, "threshold": ">= 95 %", "passed": False}
    judged: dict[str, Any] = {"passedIntervals": 2, "failedIntervals": 1, "inconclusiveIntervals": 0}
    judged |= {"lastInterval": {"result": "Failed", "metrics": [metric, {"name": "prometheus", "threshold": "<= 1"}]}}
    rollout = {"phase": "Paused", "currentStepIndex": 1, "canaryWeight": 20, "analysis": judged}
    metrics.passed("ml", "rollout-test", {"conditions": [], "rollout": rollout})
    assert _value("mlmodel_operator_rollout_phase", **where, phase="Paused") == 1
    assert (
        _value("mlmodel_operator_rollout_step", **where),
        _value("mlmodel_operator_rollout_canary_weight", **where),
    ) == (
        1,
        20,
    )
    assert _value("mlmodel_operator_analysis_value", **where, metric="successRate") == 33.3
    assert _value("mlmodel_operator_analysis_value", **where, metric="prometheus") is None  # it had no value
    assert _value("mlmodel_operator_analysis_intervals", **where, result="failed") == 1
    metrics.passed("ml", "rollout-test", {"conditions": [], "rollout": {"phase": "Aborted", "currentStepIndex": 1}})
    assert _value("mlmodel_operator_rollout_phase", **where, phase="Paused") is None
    assert _value("mlmodel_operator_rollout_phase", **where, phase="Aborted") == 1
    assert _value("mlmodel_operator_analysis_value", **where, metric="successRate") is None
    metrics.gone("ml", "rollout-test")
    assert _value("mlmodel_operator_rollout_step", **where) is None
