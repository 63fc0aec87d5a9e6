"""The operator's Prometheus metrics: its passes, and the state of every ModelDeployment it watches."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter("mlmodel_operator_reconciles_total", "Reconcile passes", ["trigger"])
ERRORS = Counter("mlmodel_operator_reconcile_errors_total", "Reconcile passes that failed", ["reason"])
CHANGES = Counter("mlmodel_operator_changes_total", "Objects applied or deleted", ["action"])
DURATION = Histogram("mlmodel_operator_reconcile_seconds", "Time per reconcile pass")
LEADER = Gauge("mlmodel_operator_leader", "1 while this replica reconciles (it holds the Lease, or runs alone)")
LAST_PASS = Gauge("mlmodel_operator_last_reconcile_timestamp_seconds", "When the last reconcile pass finished")
READY = Gauge("mlmodel_operator_ready", "1 while the ModelDeployment is Ready, else 0", ["namespace", "name"])
CONDITION = Gauge(
    "mlmodel_operator_condition",
    "The ModelDeployment's conditions: 1 for each condition's current status and reason",
    ["namespace", "name", "type", "status", "reason"],
)
# With spec.rollout: where the rollout is, and its analysis (status.rollout), for the dashboard.
ROLLOUT_PHASE = Gauge("mlmodel_operator_rollout_phase", "1 for the rollout's phase", ["namespace", "name", "phase"])
ROLLOUT_STEP = Gauge("mlmodel_operator_rollout_step", "Steps of the rollout done", ["namespace", "name"])
ROLLOUT_WEIGHT = Gauge(
    "mlmodel_operator_rollout_canary_weight",
    "Percent of the traffic the canary gets by the steps",
    ["namespace", "name"],
)
ANALYSIS_VALUE = Gauge(
    "mlmodel_operator_analysis_value",
    "Each analysis gate's value in the last interval judged (successRate in percent, p99LatencyMs, ...)",
    ["namespace", "name", "metric"],
)
ANALYSIS_INTERVALS = Gauge(
    "mlmodel_operator_analysis_intervals", "Intervals judged, by result", ["namespace", "name", "result"]
)
Series = tuple[Gauge, tuple[str, ...]]
_shown: dict[tuple[str, str], dict[Series, float]] = {}


def _series(namespace: str, name: str, status: Mapping[str, Any]) -> dict[Series, float]:
    """Every series a ModelDeployment's status shows, and its value."""
    out: dict[Series, float] = {
        (CONDITION, (namespace, name, str(c["type"]), str(c["status"]), str(c.get("reason", "")))): 1
        for c in status.get("conditions") or []
    }
    rollout = status.get("rollout") or {}
    if rollout:
        out[(ROLLOUT_PHASE, (namespace, name, str(rollout.get("phase"))))] = 1
        out[(ROLLOUT_STEP, (namespace, name))] = float(rollout.get("currentStepIndex") or 0)
        out[(ROLLOUT_WEIGHT, (namespace, name))] = float(rollout.get("canaryWeight") or 0)
    analysis = rollout.get("analysis") or {}
    if analysis:
        for result in ("passed", "failed", "inconclusive"):
            out[(ANALYSIS_INTERVALS, (namespace, name, result))] = float(analysis.get(f"{result}Intervals") or 0)
    for metric in (analysis.get("lastInterval") or {}).get("metrics") or []:
        if metric.get("value") is not None:
            out[(ANALYSIS_VALUE, (namespace, name, str(metric["name"])))] = float(metric["value"])
    return out


def passed(namespace: str, name: str, status: Mapping[str, Any]) -> None:
    """A pass finished with ``status``: show its conditions and rollout, in place of the ones shown before."""
    LAST_PASS.set(time.time())
    series = _series(namespace, name, status)
    for gauge, labels in set(_shown.get((namespace, name), {})) - set(series):
        gauge.remove(*labels)
    for (gauge, labels), value in series.items():
        gauge.labels(*labels).set(value)
    _shown[(namespace, name)] = series
    READY.labels(namespace, name).set(
        any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])
    )


def gone(namespace: str, name: str) -> None:
    """The ModelDeployment was deleted: its series go too."""
    for gauge, labels in _shown.pop((namespace, name), {}):
        gauge.remove(*labels)
    with contextlib.suppress(KeyError):
        READY.remove(namespace, name)
