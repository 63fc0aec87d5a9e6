"""Prometheus metrics, correct across gunicorn workers (multiprocess mode)."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)


class Metrics:
    """The server's metrics. In multiprocess mode every process writes its own files and
    ``/metrics`` merges them; otherwise they live in a registry of their own."""

    def __init__(self) -> None:
        self.multiprocess = MULTIPROC_ENV in os.environ
        self.registry = None if self.multiprocess else CollectorRegistry()
        reg = self.registry
        self.requests = Counter(
            "mlmodel_requests_total", "HTTP requests", ["endpoint", "status", "variant"], registry=reg
        )
        self.latency = Histogram(
            "mlmodel_request_duration_seconds",
            "HTTP request latency",
            ["endpoint", "variant"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.rows = Counter("mlmodel_rows_predicted_total", "Rows predicted", ["variant"], registry=reg)
        self.batch_rows = Histogram(
            "mlmodel_batch_rows", "Rows per model call", ["variant"], buckets=BATCH_BUCKETS, registry=reg
        )
        self.load_seconds = Gauge(
            "mlmodel_model_load_seconds",
            "Seconds to load and verify the model",
            ["variant"],
            multiprocess_mode="max",
            registry=reg,
        )
        self.info = Gauge(
            "mlmodel_model_info",
            "The model served: always 1",
            ["name", "variant", "sha256", "sklearn_version", "saved_sklearn_version"],
            multiprocess_mode="max",
            registry=reg,
        )

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        registry = self.registry
        if registry is None:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
