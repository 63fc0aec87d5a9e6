"""What the router costs: the same variant called straight through its Service and through the router.

On the test cluster (``make cluster-up images``; the chart is installed, or upgraded, with the
local images), one ModelDeployment ``iris`` with one variant and ``routing.router: always`` gets a
router in front of its Service. wrk (pinned to CPU 1, 16 connections) then alternates between
``iris-stable`` (direct) and ``iris`` (router), ``--rounds`` times each (the server limited to
one CPU on both paths, so that the router's CPU does not come out of the server's on a 2-core
machine), and the script prints
both side by side with the ratios: the router's added p50 and its share of direct throughput.
Targets: at most 1 ms added at p50, at least 90 % of direct throughput.

    .venv/bin/python bench/router.py                 # 3 rounds of 10 s each way, writes bench/ROUTER.md
    .venv/bin/python bench/router.py --rounds 1 --duration 3 --markdown ''   # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from wrk_output import WrkResult, lua_post_script, run_wrk

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / ".bench" / "router"
KUBECONFIG = REPO / ".cluster" / "kubeconfig"
KUBECTL = [str(REPO / ".cluster" / "bin" / "kubectl"), "--kubeconfig", str(KUBECONFIG)]
NAMESPACE = "bench-router"
IMAGES = {"image": "operator", "serverImage": "server", "routerImage": "router"}  # chart value -> local image
BODY = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]})
MAX_ADDED_P50_MS = 1.0
MIN_THROUGHPUT_SHARE = 0.90


def kubectl(*args: str, stdin: str | None = None) -> str:
    proc = subprocess.run([*KUBECTL, *args], input=stdin, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode:
        raise SystemExit(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def wait_ready(namespace: str, timeout_s: float = 300) -> None:
    ready = 'jsonpath={.status.conditions[?(@.type=="Ready")].status}'
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        proc = subprocess.run(
            [*KUBECTL, "-n", namespace, "get", "md", "iris", "-o", ready], capture_output=True, text=True
        )
        if proc.stdout.strip() == "True":
            return
        time.sleep(2)
    raise SystemExit(f"iris did not become Ready in {timeout_s:.0f} s")


def deploy(namespace: str, spec: dict[str, Any]) -> None:
    """The chart with the local images, the example model store and ModelDeployment iris with ``spec`` (its
    variants' ``modelUri`` the store's iris model, pinned here), until it is Ready."""
    helm = [str(REPO / ".venv" / "bin" / "helm"), "--kubeconfig", str(KUBECONFIG)]
    release = ["upgrade", "--install", "mlmodel", str(REPO / "charts" / "mlmodel"), "--namespace", "mlmodel-system"]
    images = [f"{kind}.repository=mlmodel-{name},{kind}.tag=0.1.0" for kind, name in IMAGES.items()]
    subprocess.run([*helm, *release, "--create-namespace", "--wait", "--set", ",".join(images)], check=True)
    models = WORK / "models"
    subprocess.run(
        [sys.executable, str(REPO / "server/examples/train_models.py"), "--out", str(models), "--only", "iris"],
        check=True,
        capture_output=True,
    )
    digest = hashlib.sha256((models / "iris.joblib").read_bytes()).hexdigest()
    kubectl("create", "namespace", namespace)
    kubectl("-n", namespace, "create", "configmap", "example-models", f"--from-file={models / 'iris.joblib'}")
    kubectl("-n", namespace, "apply", "-f", str(REPO / "manifests" / "examples" / "model-store.yaml"))
    variants = [{**v, "modelUri": "http://model-store/iris.joblib", "modelSha256": digest} for v in spec["variants"]]
    md = {
        "apiVersion": "mlmodel.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris", "namespace": namespace},
        "spec": {**spec, "variants": variants},
    }
    kubectl("apply", "-f", "-", stdin=json.dumps(md))
    wait_ready(namespace)


@contextlib.contextmanager
def fresh_namespace(namespace: str, keep: bool) -> Iterator[None]:
    """``namespace`` deleted before the block (a run left over), and after it unless ``keep``."""
    if not KUBECONFIG.exists():
        raise SystemExit("no test cluster: run `make cluster-up images` first")
    subprocess.run([*KUBECTL, "delete", "namespace", namespace, "--ignore-not-found", "--wait=true"], check=False)
    try:
        yield
    finally:
        if not keep:
            subprocess.run([*KUBECTL, "delete", "namespace", namespace, "--wait=false"], check=False)


def publish(text: str, markdown: str, title: str) -> None:
    """The report on stdout, and in ``markdown`` (a path, or '' for none) under ``title``."""
    print(text, end="")
    if markdown:
        Path(markdown).write_text(f"# {title}\n\n{text}")


def cluster_ip(service: str, namespace: str = NAMESPACE) -> str:
    return kubectl("-n", namespace, "get", "svc", service, "-o", "jsonpath={.spec.clusterIP}").strip()


def measure(args: argparse.Namespace) -> dict[str, list[WrkResult]]:
    script = WORK / "predict.lua"
    script.write_text(lua_post_script(BODY))
    urls = {"direct": f"http://{cluster_ip('iris-stable')}/predict", "router": f"http://{cluster_ip('iris')}/predict"}
    for url in urls.values():  # warm both paths (connections, the model's first calls)
        run_wrk(url, script, args.connections, 2, cpu=args.client_cpu)
    runs: dict[str, list[WrkResult]] = {"direct": [], "router": []}
    for _ in range(args.rounds):
        for path, url in urls.items():
            result, raw = run_wrk(url, script, args.connections, args.duration, cpu=args.client_cpu)
            if not result.ok:
                raise SystemExit(f"{path}: {result.problems()}\n{raw}")
            runs[path].append(result)
    return runs


def report(runs: dict[str, list[WrkResult]], args: argparse.Namespace) -> tuple[str, bool]:
    def median(path: str, value: str) -> float:
        return float(statistics.median(getattr(r, value) for r in runs[path]))

    rps = {p: median(p, "requests_per_sec") for p in runs}
    p50 = {p: median(p, "p50_ms") for p in runs}
    p99 = {p: median(p, "p99_ms") for p in runs}
    added, share = p50["router"] - p50["direct"], rps["router"] / rps["direct"]
    passed = added <= MAX_ADDED_P50_MS and share >= MIN_THROUGHPUT_SHARE
    lines = [
        f"Router overhead, {args.connections} connections, {args.rounds} rounds of {args.duration:.0f} s each way "
        f"(medians), wrk on CPU {args.client_cpu}:",
        "",
        "| path | req/s | p50 | p99 |",
        "| --- | ---: | ---: | ---: |",
        *(f"| {p} | {rps[p]:,.0f} | {p50[p]:.2f} ms | {p99[p]:.2f} ms |" for p in runs),
        "",
        f"- added p50: {added:+.2f} ms (target ≤ {MAX_ADDED_P50_MS:.0f} ms): "
        f"{'PASS' if added <= MAX_ADDED_P50_MS else 'MISS'}",
        f"- throughput through the router: {share:.1%} of direct (target ≥ {MIN_THROUGHPUT_SHARE:.0%}): "
        f"{'PASS' if share >= MIN_THROUGHPUT_SHARE else 'MISS'}",
    ]
    return "\n".join(lines) + "\n", passed


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating direct/router runs")
    parser.add_argument("--client-cpu", default="1", help="CPU list for wrk (taskset -c)")
    parser.add_argument("--markdown", default=str(REPO / "bench" / "ROUTER.md"), help="write the report here ('' not)")
    parser.add_argument("--keep", action="store_true", help="leave the namespace for a look afterwards")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    with fresh_namespace(NAMESPACE, args.keep):
        # One core for the server on either path, as if the router ran on other cores.
        one_core = {"name": "stable", "resources": {"limits": {"cpu": "1"}}}
        deploy(NAMESPACE, {"variants": [one_core], "routing": {"router": "always"}})
        text, passed = report(measure(args), args)
    publish(text, args.markdown, "Router overhead (`bench/router.py`)")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
