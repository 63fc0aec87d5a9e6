"""``kubectl mlmodel`` against a real kube-apiserver and the operator, run by kubectl itself (the plugin found on
PATH) as a user with only ``edit`` in the namespace (the chart's aggregated ClusterRoles give it ModelDeployments).

The variants run no pod (``replicas: 0``), so a revision never gets traffic, whatever the cluster: every command
still acts, through the API, on a rollout that waits for its canary. The traffic each command moves on real pods,
by a user with only ``edit`` too: ``tests/e2e/test_rollout_e2e.py`` (every rollout command) and
``tests/e2e/test_router_e2e.py`` (set-weight).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlmodel_operator import names
from mlmodel_testing.cluster import Cluster
from test_chart_rbac import release

from conftest import Kubectl, eventually

SHA = "a" * 64


def _md(namespace: str, name: str, variants: list[dict[str, Any]], rollout: dict[str, Any] | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"variants": variants} | ({"rollout": rollout} if rollout else {})
    meta = {"name": name, "namespace": namespace}
    return {"apiVersion": names.API_VERSION, "kind": names.KIND, "metadata": meta, "spec": spec}


def _model(version: str) -> dict[str, Any]:
    uri = f"https://models.example.com/iris/{version}.joblib"
    return {"name": "stable", "modelUri": uri, "modelSha256": SHA, "replicas": 0}


def test_every_command_works_for_a_user_with_only_edit_and_errors_are_one_line(
    kubectl: Kubectl, namespace: str, operator: Callable[..., Any], tmp_path: Path
) -> None:
    operator("--resync-seconds", "600")  # an action must bring its own pass: no resync comes within the test
    # The chart's aggregated ClusterRoles; its operator runs no pod (this test runs its own, for its namespace only).
    with release(kubectl, f"{namespace}-chart", "--set", "rbac.aggregateClusterRoles=true,replicaCount=0"):
        edit, view = (kubectl.cluster.as_user(namespace, role, tmp_path) for role in ("edit", "view"))
        rollout = {"steps": [{"setWeight": 50}, {"pause": {}}], "scaleDownDelay": "10m"}
        kubectl.apply(_md(namespace, "iris", [_model("v1")], rollout))
        manual = [{**_model("v1"), "weight": 90}, {**_model("v2"), "name": "canary", "weight": 10}]
        kubectl.apply(_md(namespace, "ab", manual, None))

        def rollout_status() -> dict[str, Any]:
            got = kubectl.get("md", "iris", namespace) or {}
            return dict((got.get("status") or {}).get("rollout") or {})

        def run(*args: str, user: Cluster = edit) -> str:
            done: subprocess.CompletedProcess[str] = user.mlmodel(*args, check=False)
            assert done.returncode == 0, (args, done.stdout, done.stderr, rollout_status().get("message"))
            return done.stdout

        def refused(*args: str, user: Cluster = edit) -> str:
            done: subprocess.CompletedProcess[str] = user.mlmodel(*args, check=False)
            assert done.returncode == 1 and done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done
            return done.stderr

        def new_model(version: str, revision: int) -> None:
            patch = [{"op": "replace", "path": "/spec/variants/0/modelUri", "value": _model(version)["modelUri"]}]
            kubectl("patch", "md", "iris", "-n", namespace, "--type=json", "-p", json.dumps(patch))
            eventually(lambda: rollout_status().get("canaryRevision") == revision, f"revision {revision} to start")

        eventually(lambda: rollout_status().get("stableRevision") == 1, "revision 1")
        new_model("v2", 2)
        assert "paused by kubectl mlmodel pause" in run("pause", "iris") and rollout_status().get("paused") is True
        run("resume", "iris")
        assert "paused" not in rollout_status()
        assert "revision 2 promoted" in run("promote", "iris", "--full")
        assert rollout_status()["stableRevision"] == 2
        # Undo: revision 1's spec applied again, while it is still up: it takes all traffic back at once.
        assert "revision 1's spec applied again" in run("undo", "iris")
        eventually(lambda: rollout_status().get("stableRevision") == 1, "the undo")
        got = kubectl.get("md", "iris", namespace)
        assert got is not None and got["spec"]["variants"][0]["modelUri"].endswith("/v1.joblib")
        new_model("v3", 3)
        assert "all traffic is back on revision 1" in run("abort", "iris")
        assert rollout_status()["phase"] == "Aborted"
        # Acknowledged; the message it prints is the status's then, which a busy operator may have moved on already
        # from "revision 3 is rolling out again" to the step's.
        assert run("retry", "iris").startswith("iris: retry revision 3:")
        retried = rollout_status()
        assert retried["phase"] != "Aborted" and retried["canaryRevision"] == 3
        assert run("promote", "iris").startswith("iris: promote revision 3:")
        history = run("history", "iris").splitlines()
        assert history[0].split() == ["REVISION", "MODEL", "DIGEST", "IMAGE", "CREATED", "OUTCOME"], history
        assert [row.split()[0] for row in history[1:]] == ["1", "2", "3"] and history[-1].endswith("Progressing")
        shown = run("status", "iris")
        assert "Phase:      Progressing" in shown and "<- now" in shown and "REVISION" in shown, shown
        # A manual ModelDeployment's weights.
        assert run("set-weight", "ab", "stable=70", "canary=30").strip() == "ab: weights stable=70 canary=30"
        weights = [v["weight"] for v in (kubectl.get("md", "ab", namespace) or {})["spec"]["variants"]]
        assert weights == [70, 30]
        # One-line errors: a wrong name, a wrong variant, no permission (the rest, pure: ../test_plugin.py).
        assert "not found" in refused("status", "nope")
        assert "ab: no variant 'shadow' (its variants: stable, canary)" in refused("set-weight", "ab", "shadow=10")
        assert "is forbidden" in refused("pause", "iris", user=view)
