"""Serving straight from an MLflow Model Registry, on real pods: ``manifests/examples/mlflow.yaml`` (a real MLflow
tracking server, its registry and artifact proxy) and ``manifests/examples/iris-mlflow.yaml`` as they are, models
put there with MLflow's own client (``mlflow.sklearn.log_model``, ``set_registered_model_alias``). ``champion`` at
version 1 is served pinned; moved to version 2 under a steady load, it rolls out through the example's steps and is
promoted with no failed request; moved to a version fitted on shuffled labels, it is aborted in the shadow step and
never answers a client, and ``champion`` stays where it was moved (the operator never writes to the registry); a
serving pod killed then comes back with the version pinned, not the one the alias names. The lookups and their
refusals (unknown model, unreachable server, wrong password): ``operator/tests/integration/test_mlflow_registry.py``
and ``test_mlflow_client.py``.

Every request is a new connection with no retry (``load.call``); every number is asserted.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from mlmodel_demo import registry
from mlmodel_demo.rollout import wait_for
from mlmodel_demo.steps import Steps
from mlmodel_operator import names
from mlmodel_testing.cluster import Cluster
from mlmodel_testing.load import IRIS_MIX, constant_load, summary
from mlmodel_testing.mlflow import register_forests

ABORTED_SECONDS = 180


@pytest.mark.long
def test_a_registry_alias_is_served_pinned_rolled_out_when_it_moves_and_a_disagreeing_version_is_aborted(
    cluster: Cluster, namespace: str, operator: None, models: Path, tmp_path: Path, mlflow_image: None
) -> None:
    outcome = registry.run(Steps(workdir=tmp_path), cluster, namespace, models)
    assert (outcome.pinned["version"], outcome.pinned["resolved"]) == ("1", "iris@champion → v1"), outcome.pinned
    assert "iris@champion → v1" in outcome.table, outcome.table
    # The signature logged with it is the servers' input contract, and they took it (Ready).
    assert '"name": "petal_length"' in outcome.pinned["inputSchema"], outcome.pinned
    assert not outcome.failed, summary(outcome.results)
    assert {r.variant for r in outcome.results if r.sent > outcome.settled} == {"r2"}
    assert outcome.noticed <= registry.NOTICED_SECONDS and outcome.promoted <= registry.PROMOTED_SECONDS, outcome
    # champion moved to a version fitted on shuffled labels: aborted in the shadow step, and left where it was moved.
    with cluster.service_url(namespace, "mlflow", 5000) as tracking:
        assert register_forests(tracking, "iris", models, "iris-shuffled.joblib") == ["3"]
        client = MlflowClient(tracking)
        with cluster.service_url(namespace, "iris", 80) as base, constant_load(base, registry.RATE, IRIS_MIX) as load:
            moved = time.monotonic()
            client.set_registered_model_alias("iris", "champion", "3")
            wait_for(cluster, namespace, {"canaryRevision": 3, "phase": "Aborted"}, ABORTED_SECONDS)
            results = list(load.results)
        assert client.get_model_version_by_alias("iris", "champion").version == "3"  # the operator never writes
    assert not [r for r in results if r.status != 200], summary(results)
    assert {r.variant for r in results} == {"r2"}, summary(results)  # iris-shuffled answered no client
    status = cluster.get("modeldeployments", "iris", namespace=namespace)["status"]
    outcomes = [(r["revision"], r["outcome"]) for r in status["revisions"]]
    assert outcomes == [(1, "Promoted"), (2, "Promoted"), (3, "Aborted")], outcomes
    pinned = {r["revision"]: r["modelSha256"] for r in status["revisions"]}
    assert status["models"][0]["sha256"] == pinned[3] != pinned[2]  # what the alias names, not what serves
    # A serving pod killed while champion names version 3: its replacement serves version 2, pinned.
    selector = ",".join(f"{k}={v}" for k, v in names.selector("iris", "r2").items())
    killed = cluster.kubectl("-n", namespace, "get", "pod", "-l", selector, "-o", "name").stdout.split()[0]
    cluster.kubectl("-n", namespace, "delete", killed, "--wait=false")

    def replacement() -> dict[str, Any] | None:
        pods = cluster.get("pods", namespace=namespace, selector=selector)["items"]
        fresh = [p for p in pods if f"pod/{p['metadata']['name']}" != killed and _ready(p)]
        return fresh[0] if fresh else None

    pod = cluster.wait_until("the killed pod's replacement to be ready", replacement, 120)
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env[names.ENV_MODEL_SHA256] == pinned[2], env
    print(f"\n{registry.report(outcome)}\niris-shuffled aborted {time.monotonic() - moved:.0f} s after champion moved")


def _ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
