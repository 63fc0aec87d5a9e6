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
_shown: dict[tuple[str, str], list[tuple[str, ...]]] = {}


def passed(namespace: str, name: str, status: Mapping[str, Any]) -> None:
    """A pass finished with ``status``: show its conditions, in place of the ones shown before."""
    LAST_PASS.set(time.time())
    labels: list[tuple[str, ...]] = [
        (namespace, name, str(c["type"]), str(c["status"]), str(c.get("reason", "")))
        for c in status.get("conditions") or []
    ]
    for old in set(_shown.get((namespace, name), [])) - set(labels):
        CONDITION.remove(*old)
    for current in labels:
        CONDITION.labels(*current).set(1)
    _shown[(namespace, name)] = labels
    READY.labels(namespace, name).set(any(c[2] == "Ready" and c[3] == "True" for c in labels))


def gone(namespace: str, name: str) -> None:
    """The ModelDeployment was deleted: its series go too."""
    for old in _shown.pop((namespace, name), []):
        CONDITION.remove(*old)
    with contextlib.suppress(KeyError):
        READY.remove(namespace, name)
