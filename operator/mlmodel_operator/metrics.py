"""The operator's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RECONCILES = Counter("mlmodel_operator_reconciles_total", "Reconcile passes", ["trigger"])
ERRORS = Counter("mlmodel_operator_reconcile_errors_total", "Reconcile passes that failed", ["reason"])
CHANGES = Counter("mlmodel_operator_changes_total", "Objects applied or deleted", ["action"])
DURATION = Histogram("mlmodel_operator_reconcile_seconds", "Time per reconcile pass")
