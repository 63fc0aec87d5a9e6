"""The per-ModelDeployment gauges follow the status, and go when the resource goes."""

from __future__ import annotations

from mlmodel_operator import metrics
from prometheus_client import REGISTRY


def _condition(kind: str, value: str, reason: str) -> dict[str, str]:
    return {"type": kind, "status": value, "reason": reason}


def _value(metric: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(metric, labels)


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
