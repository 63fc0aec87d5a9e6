"""The example canary live on a cluster, as ``make demo`` shows it: the iris models trained and served from the
namespace's model store, ``iris-canary.yaml`` with their digests, predictions through the entry Service, and the
split observed while the canary's weight goes 0 -> 10 -> 50 -> 100. Every kubectl command goes to the log of the
step in progress (``LoggedCluster``)."""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from mlmodel_operator import names
from mlmodel_testing.cluster import CLUSTER_SCOPED, PLUGIN_DIR, Cluster
from mlmodel_testing.load import burst, call
from mlmodel_testing.models import CANARY_EXAMPLE, deploy_model_store, train_models
from mlmodel_testing.release import CHART, OPERATOR, leader_pod
from mlmodel_testing.release import NAMESPACE as OPERATOR_NAMESPACE
from mlmodel_testing.status import settled, wait_settled

from mlmodel_demo.report import Split, dashboard_query, next_steps, weight_patch
from mlmodel_demo.steps import Steps

MD = "iris"
STABLE, CANARY = "stable", "canary"
DASHBOARD = CHART / "files" / "dashboard.json"
WEIGHTS = (0, 10, 50, 100)  # the canary's, step by step
REQUESTS = 200  # per step
# Real rows of the iris data set, one per class, and the classes' names.
ROWS = ([5.1, 3.5, 1.4, 0.2], [7.0, 3.2, 4.7, 1.4], [6.3, 3.3, 6.0, 2.5])
CLASSES = ("setosa", "versicolor", "virginica")
LOGGED_OUTPUT = 2000  # characters of a command's output that go to the step's log; more is summarized


@dataclass
class LoggedCluster(Cluster):
    """The test cluster's access, with every kubectl command (and its output) in the log of the step in
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

    def get(self, resource: str, name: str | None = None, **options: Any) -> Any:
        """``Cluster.get`` through kubectl, so that the step's log shows the commands a user would run."""
        namespace, selector, fields = (options.get(key) for key in ("namespace", "selector", "fields"))
        scope = ["-n", namespace] if namespace else [] if resource in CLUSTER_SCOPED else ["--all-namespaces"]
        filters = [*(["-l", selector] if selector else []), *(["--field-selector", fields] if fields else [])]
        args = [*scope, "get", resource, *([name] if name else []), *filters, "-o", "json"]
        done = self.kubectl(*args, check=False)
        if done.returncode == 0:
            return json.loads(done.stdout)
        if options.get("missing_ok") and name and "NotFound" in done.stderr:
            return None
        raise AssertionError(f"kubectl {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")


def serve_models(cluster: Cluster, namespace: str, out: Path) -> dict[str, str]:
    """The example models, trained into ``out`` and served in ``namespace`` by the model store: their sha256."""
    digests = train_models(out)
    deploy_model_store(cluster, namespace, out)
    return digests


def apply_canary(cluster: Cluster, namespace: str, digests: dict[str, str]) -> dict[str, Any]:
    """``iris-canary.yaml``, each variant pinned to the digest of the model its URI names; its status once
    Ready."""
    md = yaml.safe_load(CANARY_EXAMPLE.read_text())
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


def move_canary(cluster: Cluster, namespace: str, base: str, weight: int) -> float:
    """Give the canary ``weight`` percent; the seconds until the status says so and every one of 20 answers
    through ``base`` was routed by those weights (the router pods follow them live)."""
    md = cluster.get("modeldeployments", MD, namespace=namespace)
    patch = weight_patch(md["spec"]["variants"], CANARY, weight)
    started = time.monotonic()
    cluster.kubectl("-n", namespace, "patch", "modeldeployment", MD, "--type=json", "-p", json.dumps(patch))
    weights = ",".join(f"{v['name']}={p['value']}" for v, p in zip(md["spec"]["variants"], patch, strict=True))

    def in_effect() -> bool:
        status = settled(cluster, namespace)
        decided = status is not None and status.get("weights") == weights
        return decided and all(r.weights == weights for r in burst(base, 20))

    cluster.wait_until(f"the router to serve {weights}", in_effect, 120, interval=0.1)
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
                split = observe(base, weight, move_canary(cluster, namespace, base, weight))
                step.note = f"in effect after {split.effect_seconds:.1f}s; " + ", ".join(
                    f"{name} {count}" for name, count in sorted(split.counts.items())
                )
                splits.append(split)
    return splits


def pointers(cluster: Cluster, namespace: str, rollout_namespace: str, registry_namespace: str) -> str:
    """Where to look next, with this cluster's kubeconfig and pods (and the plugin's directory)."""
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
        plugin_dir=str(PLUGIN_DIR),
        rollout_namespace=rollout_namespace,
        registry_namespace=registry_namespace,
    )
