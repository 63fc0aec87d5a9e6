"""``make demo``'s second half, in the virtualenv: the chart, the example models and the canary, then live.

``up`` (after ``demo.py``'s steps 1-3): ``helm upgrade --install`` of the chart, the iris models trained
here and served from the in-cluster model store, ``iris-canary.yaml`` with their digests, then the canary
live: ``kubectl get md``, predictions through the entry Service and the split observed while the canary's
weight goes 0 -> 10 -> 50 -> 100. ``load``: Locust against the entry Service. ``down``: remove it all.

The cluster is reached as the e2e tests reach it, with their code (``tests/e2e``): ``conftest.Cluster``,
``release.install``, ``load.burst``; ``tests/e2e/test_demo_e2e.py`` runs the live part.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "e2e"))  # the e2e tests' cluster access

import yaml
from demo import WORKDIR, StepFailed, Steps, make
from demo_report import (
    Split,
    dashboard_query,
    load_rows,
    load_table,
    next_steps,
    split_table,
    weight_patch,
)
from load import burst, call
from mlmodel_operator import names
from release import IMAGES, OPERATOR, RELEASE, helm, install, leader_pod, restricted_namespace
from release import NAMESPACE as OPERATOR_NAMESPACE

from conftest import REPO, STATE, Cluster, deploy_model_store, settled, train_models, wait_settled

NAMESPACE = "demo"
MD = "iris"
STABLE, CANARY = "stable", "canary"
MANIFEST = REPO / "manifests" / "examples" / "iris-canary.yaml"
DASHBOARD = REPO / "charts" / "mlmodel" / "files" / "dashboard.json"
LOCUSTFILE = REPO / "bench" / "locustfile.py"
LOCUST_PREFIX = "/predict "  # bench/locustfile.py names each request "/predict <variant>"
WEIGHTS = (0, 10, 50, 100)  # the canary's, step by step
REQUESTS = 200  # per step
# Real rows of the iris data set, one per class, and the classes' names.
ROWS = ([5.1, 3.5, 1.4, 0.2], [7.0, 3.2, 4.7, 1.4], [6.3, 3.3, 6.0, 2.5])
CLASSES = ("setosa", "versicolor", "virginica")
LOGGED_OUTPUT = 2000  # characters of a command's output that go to the step's log; more is summarized


@dataclass
class LoggedCluster(Cluster):
    """The e2e tests' cluster access, with every kubectl command (and its output) in the log of the step in
    progress."""

    steps: Steps | None = None

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        log = self.steps.log if self.steps else None
        if log:
            log.write(f"$ kubectl {' '.join(args)}\n")
            log.flush()
        done = super().kubectl(*args, input=input, check=check, timeout=timeout)
        if log:
            text = done.stdout + done.stderr
            log.write(text if len(text) <= LOGGED_OUTPUT else f"({len(text)} characters of output)\n")
        return done


def install_chart(cluster: Cluster) -> str:
    """The operator: ``helm upgrade --install`` of charts/mlmodel with the images ``make images`` loaded."""
    result = install(cluster, values=IMAGES)
    revision = next((ln for ln in result.stdout.splitlines() if ln.startswith("REVISION:")), "")
    return f"release {RELEASE} in {OPERATOR_NAMESPACE}, {revision.lower()}".strip(", ")


def serve_models(cluster: Cluster, namespace: str, out: Path) -> dict[str, str]:
    """The example models, trained into ``out`` and served in ``namespace`` by the model store: their sha256."""
    digests = train_models(out)
    deploy_model_store(cluster, namespace, out)
    return digests


def apply_canary(cluster: Cluster, namespace: str, digests: dict[str, str]) -> dict[str, Any]:
    """``iris-canary.yaml``, each variant pinned to the digest of the model its URI names; its status once
    Ready."""
    md = yaml.safe_load(MANIFEST.read_text())
    md["metadata"]["namespace"] = namespace
    for variant in md["spec"]["variants"]:
        variant["modelSha256"] = digests[Path(variant["modelUri"]).stem]
    cluster.apply(md)
    return wait_settled(cluster, namespace, timeout=300)


def predictions(base: str) -> list[str]:
    """One prediction per iris class through the entry Service, and one pinned to the canary, with the
    variant that answered each."""
    lines = []
    for row, pin in [*((row, None) for row in ROWS), (ROWS[2], CANARY)]:
        headers = {names.HEADER_VARIANT: pin} if pin else {}
        result = call(base, headers, body=json.dumps({"instances": [row]}).encode())
        if result.status != 200:
            raise AssertionError(f"POST {base}/predict {row}: HTTP {result.status} {result.error or result.body!r}")
        answer = json.loads(result.body)
        label, p = answer["predictions"][0], max(answer["probabilities"][0])
        pinned = f"   (pinned: {names.HEADER_VARIANT}: {pin})" if pin else ""
        lines.append(
            f"  {json.dumps(row):<22} -> {CLASSES[label]:<10} p={p:.2f}   "
            f"answered by {names.HEADER_VARIANT}: {result.variant}{pinned}"
        )
    return lines


def move_canary(cluster: Cluster, namespace: str, weight: int) -> float:
    """Give the canary ``weight`` percent; the seconds until the router serves that split."""
    md = cluster.kubectl_json("-n", namespace, "get", "modeldeployment", MD)
    patch = weight_patch(md["spec"]["variants"], CANARY, weight)
    started = time.monotonic()
    cluster.kubectl("-n", namespace, "patch", "modeldeployment", MD, "--type=json", "-p", json.dumps(patch))
    weights = ",".join(f"{v['name']}={p['value']}" for v, p in zip(md["spec"]["variants"], patch, strict=True))

    def in_effect() -> bool:
        status = settled(cluster, namespace)
        return status is not None and status.get("weights") == weights

    cluster.wait_until(f"the router to serve {weights}", in_effect, 120, interval=0.5)
    return time.monotonic() - started


def observe(base: str, weight: int, effect_seconds: float, requests: int = REQUESTS) -> Split:
    """``requests`` predictions, each on a new connection: who answered."""
    results = burst(base, requests)
    return Split(
        weight=weight,
        effect_seconds=effect_seconds,
        counts=Counter(r.variant or "-" for r in results),
        failed=sum(r.status != 200 for r in results),
    )


def live(steps: Steps, cluster: Cluster, namespace: str) -> list[Split]:
    """Predictions through the entry Service, then the canary at each of ``WEIGHTS``: the split seen at each."""
    service = names.entry_service(MD)
    splits = []
    with cluster.service_url(namespace, service, names.SERVICE_PORT) as base:
        with steps.step("predictions", f"predictions through Service {namespace}/{service}") as step:
            step.note = base
            step.output = predictions(base)
        for weight in WEIGHTS:
            with steps.step(f"weight-{weight}", f"canary at {weight:>3} %, {REQUESTS} requests") as step:
                split = observe(base, weight, move_canary(cluster, namespace, weight))
                step.note = f"in effect after {split.effect_seconds:.1f}s; " + ", ".join(
                    f"{name} {count}" for name, count in sorted(split.counts.items())
                )
                splits.append(split)
    return splits


def pointers(cluster: Cluster, namespace: str) -> str:
    """Where to look next, with this cluster's kubeconfig and pods."""
    router = cluster.kubectl(
        "-n",
        namespace,
        "get",
        "pods",
        "-l",
        ",".join(f"{k}={v}" for k, v in names.router_selector(MD).items()),
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ).stdout
    return next_steps(
        kubeconfig=str(cluster.kubeconfig),
        kubectl_dir=str(Path(cluster.kubectl_bin).parent),
        namespace=namespace,
        md=MD,
        operator_namespace=OPERATOR_NAMESPACE,
        operator_pod=leader_pod(cluster) or f"deploy/{OPERATOR}",
        variant_deployment=names.child(MD, CANARY),
        router_deployment=names.router(MD),
        router_pod=router,
        admin_port=names.ROUTER_ADMIN_PORT,
        query=dashboard_query(json.loads(DASHBOARD.read_text()), "Requests per second", namespace, MD),
    )


def up(steps: Steps, cluster: Cluster) -> None:
    """Steps 4-6, then the canary live."""
    with steps.step("chart", "operator (helm upgrade --install charts/mlmodel)") as step:
        step.note = install_chart(cluster)
    with steps.step("models", f"example models iris, iris-v2 in the model store of namespace {NAMESPACE}") as step:
        restricted_namespace(cluster, NAMESPACE)
        digests = serve_models(cluster, NAMESPACE, WORKDIR / "models")
        step.note = ", ".join(f"{name} sha256 {sha[:12]}" for name, sha in digests.items())
    with steps.step("canary", f"kubectl apply -f {MANIFEST.relative_to(REPO)}, until Ready") as step:
        apply_canary(cluster, NAMESPACE, digests)
        step.output = [
            "",
            f"$ kubectl -n {NAMESPACE} get md",
            cluster.kubectl("-n", NAMESPACE, "get", "md").stdout.rstrip(),
        ]
    splits = live(steps, cluster, NAMESPACE)
    print(f"\nThe split the router served at each step ({REQUESTS} requests, a new connection each):")
    print(split_table(splits, STABLE, CANARY))
    print()
    print(pointers(cluster, NAMESPACE))


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
        with steps.step("down-examples", f"namespace {NAMESPACE} (kubectl delete namespace)"):
            cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait", timeout=300)
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
