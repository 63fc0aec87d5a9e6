"""Serving from MLflow's registry, as ``make demo`` shows it: a real tracking server in the namespace
(``manifests/examples/mlflow.yaml``), iris and iris-v2 logged and registered with MLflow's own client,
``iris-mlflow.yaml`` serving ``models:/iris@champion``, then ``champion`` moved from version 1 to version 2 under a
steady load: the operator notices within its poll interval, and the new version goes through the example's steps
(a shadow step judged by its agreement with version 1, then live) to promotion."""

from __future__ import annotations

import time
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlmodel_testing.cluster import REPO, Cluster
from mlmodel_testing.load import IRIS_MIX, Result, constant_load
from mlmodel_testing.mlflow import deploy_tracking_server, register_forests
from mlmodel_testing.models import MLFLOW_EXAMPLE, MLFLOW_SERVER
from mlmodel_testing.status import wait_settled

from mlmodel_demo.rollout import wait_for
from mlmodel_demo.steps import Steps

RATE = 10  # requests/s through the entry Service while champion moves
POLL_SECONDS = 10  # the example's spec.mlflow.pollInterval
NOTICED_SECONDS = POLL_SECONDS + 5  # from the alias moved to the new revision in the status: a poll, and a pass
PROMOTED_SECONDS = 240
ROUTERS_SECONDS = 2  # from the promotion in the status to the routers' last answer of another revision
DOCS = "docs/mlflow.md"


@dataclass(frozen=True)
class Outcome:
    pinned: dict[str, Any]  # status.models[0] while champion names version 1
    table: str  # kubectl get md then
    noticed: float  # seconds from the alias moved to revision 2 in the status
    promoted: float  # and to its promotion
    settled: float  # time.monotonic() after which every answer is revision 2's
    results: list[Result]

    @property
    def failed(self) -> list[Result]:
        return [r for r in self.results if r.status != 200]


def run(steps: Steps, cluster: Cluster, namespace: str, models: Path) -> Outcome:
    """The tracking server and the example in ``namespace``, the forests of ``models`` registered, and champion
    moved to version 2."""
    with steps.step("mlflow", f"MLflow's tracking server: kubectl apply -f {MLFLOW_SERVER.relative_to(REPO)}"):
        deploy_tracking_server(cluster, namespace)
    with cluster.service_url(namespace, "mlflow", 5000) as tracking:
        registering = "iris and iris-v2 registered (mlflow.sklearn.log_model), champion → v1"
        with steps.step("mlflow-register", registering) as step, redirect_stdout(step.log), redirect_stderr(step.log):
            register_forests(tracking, "iris", models, "iris.joblib", "iris-v2.joblib")  # its chatter to the log
            client = MlflowClient(tracking)
            client.set_registered_model_alias("iris", "champion", "1")
        with steps.step("mlflow-serve", f"kubectl apply -f {MLFLOW_EXAMPLE.relative_to(REPO)}, until Ready") as step:
            cluster.kubectl("-n", namespace, "apply", "-f", str(MLFLOW_EXAMPLE))
            status = wait_settled(cluster, namespace, timeout=300)
            table = cluster.kubectl("-n", namespace, "get", "md", "iris").stdout.rstrip()
            step.output = ["", f"$ kubectl -n {namespace} get md iris", table]
        with cluster.service_url(namespace, "iris", 80) as base, constant_load(base, RATE, IRIS_MIX) as load:
            cluster.wait_until("traffic", lambda: len(load.results) > 20, 30)
            with steps.step("mlflow-promote", "champion moved to version 2 in MLflow: rolled out, promoted") as step:
                moved = time.monotonic()
                client.set_registered_model_alias("iris", "champion", "2")
                wait_for(cluster, namespace, {"canaryRevision": 2}, NOTICED_SECONDS)
                noticed = time.monotonic() - moved
                wait_for(cluster, namespace, {"stableRevision": 2}, PROMOTED_SECONDS)
                promoted = time.monotonic() - moved
                settled = time.monotonic() + ROUTERS_SECONDS
                cluster.wait_until("answers after the promotion", lambda: len(load.since(settled)) > 20, 30)
                step.note = f"revision 2 started {noticed:.0f} s after the alias moved, promoted after {promoted:.0f} s"
            results = list(load.results)
    return Outcome(status["models"][0], table, noticed, promoted, settled, results)


def report(outcome: Outcome) -> str:
    """What came of it, in a sentence, and where to read more."""
    failed = f"{len(outcome.failed)} of {len(outcome.results)} requests failed"
    return (
        f"models:/iris@champion served pinned to version {outcome.pinned['version']} (sha256"
        f" {outcome.pinned['sha256'][:12]}); champion moved to version 2 in MLflow: revision 2 started"
        f" {outcome.noticed:.0f} s later, promoted after {outcome.promoted:.0f} s; {failed}.\n"
        f"From MLflow to production in three commands: {DOCS}"
    )
