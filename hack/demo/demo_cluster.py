"""``make demo``'s second half, in the virtualenv: the chart, the example models and the canary, then live.

``up`` (after ``demo.py``'s steps 1-3): ``helm upgrade --install`` of the chart, the iris models trained
here and served from the in-cluster model store, ``iris-canary.yaml`` with their digests, then the canary
live: ``kubectl get md``, predictions through the entry Service and the split observed while the canary's
weight goes 0 -> 10 -> 50 -> 100; then ``iris-rollout.yaml`` in a namespace of its own, a new model rolled
out by its steps and promoted, and a model that does not load aborted (``mlmodel_demo.rollout``); then a real
MLflow tracking server and ``iris-mlflow.yaml`` serving ``models:/iris@champion``, the alias moved to a new
version and rolled out (``mlmodel_demo.registry``).
``load``: Locust against the entry Service. ``down``: remove it all.

The cluster is reached as the e2e tests reach it, with ``mlmodel_testing`` (``hack/testing``); the live part
is ``mlmodel_demo.canary``, which ``tests/e2e/test_demo_e2e.py`` runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mlmodel_demo import registry, rollout
from mlmodel_demo.canary import CANARY, MD, REQUESTS, STABLE, LoggedCluster, apply_canary, live, pointers, serve_models
from mlmodel_demo.report import load_rows, load_table, split_table
from mlmodel_demo.steps import WORKDIR, StepFailed, Steps, make
from mlmodel_operator import names
from mlmodel_testing.cluster import REPO, STATE, Cluster
from mlmodel_testing.models import CANARY_EXAMPLE
from mlmodel_testing.release import NAMESPACE as OPERATOR_NAMESPACE
from mlmodel_testing.release import RELEASE, helm, install, restricted_namespace
from mlmodel_testing.status import settled

NAMESPACE = "demo"
ROLLOUT_NAMESPACE = "demo-rollout"  # the rollout example is called iris too
MLFLOW_NAMESPACE = "demo-mlflow"  # and the registry's
LOCUSTFILE = REPO / "bench" / "locustfile.py"
LOCUST_PREFIX = "/predict "  # bench/locustfile.py names each request "/predict <variant>"


def install_chart(cluster: Cluster) -> str:
    """The operator: ``helm upgrade --install`` of charts/mlmodel with the images ``make images`` loaded."""
    result = install(cluster, values=[])
    revision = next((ln for ln in result.stdout.splitlines() if ln.startswith("REVISION:")), "")
    return f"release {RELEASE} in {OPERATOR_NAMESPACE}, {revision.lower()}".strip(", ")


def up(steps: Steps, cluster: Cluster) -> None:
    """Steps 4-6, then the canary live."""
    with steps.step("chart", "operator (helm upgrade --install charts/mlmodel)") as step:
        step.note = install_chart(cluster)
    what = f"the example models (iris, iris-v2; iris-5xx, iris-slow, iris-shuffled to abort) in {NAMESPACE}'s store"
    with steps.step("models", what) as step:
        restricted_namespace(cluster, NAMESPACE)
        digests = serve_models(cluster, NAMESPACE, WORKDIR / "models")
        step.note = ", ".join(f"{name} sha256 {sha[:12]}" for name, sha in digests.items())
    with steps.step("canary", f"kubectl apply -f {CANARY_EXAMPLE.relative_to(REPO)}, until Ready") as step:
        apply_canary(cluster, NAMESPACE, digests)
        step.output = [
            "",
            f"$ kubectl -n {NAMESPACE} get md",
            cluster.kubectl("-n", NAMESPACE, "get", "md").stdout.rstrip(),
        ]
    splits = live(steps, cluster, NAMESPACE)
    print(f"\nThe split the router served at each step ({REQUESTS} requests, a new connection each):")
    print(split_table(splits, STABLE, CANARY))
    with steps.step("rollout-models", f"the example models in the model store of namespace {ROLLOUT_NAMESPACE}"):
        restricted_namespace(cluster, ROLLOUT_NAMESPACE)
        serve_models(cluster, ROLLOUT_NAMESPACE, WORKDIR / "models")
    outcome = rollout.run(steps, cluster, ROLLOUT_NAMESPACE, WORKDIR / "models")
    print(f"\nThe automated rollout ({rollout.RATE} requests/s through Service {ROLLOUT_NAMESPACE}/iris meanwhile):")
    print(rollout.report(outcome))
    restricted_namespace(cluster, MLFLOW_NAMESPACE)
    served = registry.run(steps, cluster, MLFLOW_NAMESPACE, WORKDIR / "models")
    print(f"\nServing from MLflow's registry ({registry.RATE} requests/s through Service {MLFLOW_NAMESPACE}/iris):")
    print(registry.report(served))
    print()
    print(pointers(cluster, NAMESPACE, ROLLOUT_NAMESPACE, MLFLOW_NAMESPACE))


def load(steps: Steps, cluster: Cluster, users: int, seconds: int) -> None:
    """Locust against the entry Service of the demo's ModelDeployment: per-variant counts and latencies."""
    with steps.step("load-target", f"ModelDeployment {NAMESPACE}/{MD} Ready"):
        if settled(cluster, NAMESPACE) is None:
            raise StepFailed(f"{MD} is not Ready, or still rolling out: see `kubectl -n {NAMESPACE} get md`")
    stats = WORKDIR / "load"  # Locust adds .json
    with cluster.service_url(NAMESPACE, names.entry_service(MD), names.SERVICE_PORT) as base:
        argv = [
            str(Path(sys.executable).with_name("locust")),
            *("-f", str(LOCUSTFILE), "--host", base, "--headless", "--json-file", str(stats)),
            *("--users", str(users), "--spawn-rate", str(users), "--run-time", f"{seconds}s"),
        ]
        with steps.command("load", f"Locust: {users} users for {seconds} s against {base}", argv) as step:
            rows = load_rows(json.loads(stats.with_suffix(".json").read_text()), LOCUST_PREFIX)
            step.output = ["", load_table(rows)]


def down(steps: Steps, cluster: Cluster) -> None:
    """The example namespace, the release and its namespace, then the cluster."""
    reachable = cluster.kubeconfig.exists() and cluster.kubectl("get", "--raw", "/readyz", check=False).returncode == 0
    if reachable:
        examples = (NAMESPACE, ROLLOUT_NAMESPACE, MLFLOW_NAMESPACE)
        with steps.step("down-examples", f"namespaces {', '.join(examples)} (kubectl delete namespace)"):
            cluster.kubectl("delete", "namespace", *examples, "--ignore-not-found", "--wait", timeout=300)
        with steps.step("down-chart", f"release {RELEASE} and namespace {OPERATOR_NAMESPACE} (helm uninstall)"):
            helm(cluster, "uninstall", RELEASE, "--namespace", OPERATOR_NAMESPACE, "--ignore-not-found", "--wait")
            cluster.kubectl("delete", "namespace", OPERATOR_NAMESPACE, "--ignore-not-found", "--wait", timeout=300)
    steps.run("down-cluster", "cluster (make cluster-down)", make("cluster-down"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="steps 4-6 and the canary live (`make demo` runs demo.py, which runs this)")
    loading = sub.add_parser("load", help="Locust against the demo's entry Service (`make load`)")
    loading.add_argument("--users", type=int, default=20)
    loading.add_argument("--seconds", type=int, default=30)
    sub.add_parser("down", help="remove the demo and the cluster (`make demo-down`)")
    args = parser.parse_args()
    steps = Steps()
    cluster = LoggedCluster.at(STATE)
    cluster.steps = steps
    if args.command == "up":
        up(steps, cluster)
    elif args.command == "load":
        load(steps, cluster, args.users, args.seconds)
    else:
        down(steps, cluster)


if __name__ == "__main__":
    main()
