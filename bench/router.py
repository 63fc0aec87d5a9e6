"""What the router costs: the same variant called straight through its Service and through the router.

On the test cluster (``make cluster-up images``; the chart is installed, or upgraded, with the
local images), one ModelDeployment ``iris`` with one variant and ``routing.router: always`` gets a
router in front of its Service. wrk (pinned to CPU 1, 16 connections) then alternates between
``iris-stable`` (direct) and ``iris`` (router), ``--rounds`` times each (the server limited to
one CPU on both paths, so that the router's CPU does not come out of the server's on a 2-core
machine), and the script prints
both side by side with the ratios: the router's added p50 and its share of direct throughput.
Targets: at most 1 ms added at p50, at least 90 % of direct throughput.

With ``--shadow``, the comparison's cost: ``copies``, whose router copies every request to a shadow variant
with the comparison off (``routing.mirror`` at 100 %, ``compare: false``), against ``iris``, the same with it on
(the router keeps each answer and sends it with the copy, and the shadow's server compares the two), and
``plain`` (one variant through a router, no copy) beside them for reference; on the fast logistic regression (30
features, one row a request). Beside p50, p99 and throughput, the routers' nginx CPU seconds per 1,000
requests. Targets: at most 0.3 ms added at p50, at least 90 % of the throughput with the comparison off.

    .venv/bin/python bench/router.py                 # 3 rounds of 10 s each way, writes bench/ROUTER.md
    .venv/bin/python bench/router.py --rounds 1 --duration 3 --markdown ''   # a quick look
    .venv/bin/python bench/router.py --shadow        # writes bench/SHADOW.md
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mlmodel_operator import analysis, names
from wrk_output import WrkResult, lua_post_script, run_wrk

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / ".bench" / "router"
KUBECONFIG = REPO / ".cluster" / "kubeconfig"
KUBECTL = [str(REPO / ".cluster" / "bin" / "kubectl"), "--kubeconfig", str(KUBECONFIG)]
NAMESPACE = "bench-router"
IMAGES = {"image": "operator", "serverImage": "server", "routerImage": "router"}  # chart value -> local image
BODY = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]})
LOGREG_BODY = json.dumps({"instances": [[0.5] * 30]})
MAX_ADDED_P50_MS = 1.0
MAX_SHADOW_ADDED_P50_MS = 0.3
MIN_THROUGHPUT_SHARE = 0.90
DEFAULT_MARKDOWN = str(REPO / "bench" / "ROUTER.md")  # bench/SHADOW.md with --shadow


def kubectl(*args: str, stdin: str | None = None) -> str:
    proc = subprocess.run([*KUBECTL, *args], input=stdin, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode:
        raise SystemExit(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def wait_ready(namespace: str, name: str = "iris", timeout_s: float = 300) -> None:
    ready = 'jsonpath={.status.conditions[?(@.type=="Ready")].status}'
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        proc = subprocess.run(
            [*KUBECTL, "-n", namespace, "get", "md", name, "-o", ready], capture_output=True, text=True
        )
        if proc.stdout.strip() == "True":
            return
        time.sleep(2)
    raise SystemExit(f"{name} did not become Ready in {timeout_s:.0f} s")


def deploy(namespace: str, spec: dict[str, Any], model: str = "iris", name: str = "iris") -> None:
    """The chart with the local images, the example model store and ModelDeployment ``name`` with ``spec`` (its
    variants' ``modelUri`` the store's ``model``, pinned here), until it is Ready."""
    helm = [str(REPO / ".venv" / "bin" / "helm"), "--kubeconfig", str(KUBECONFIG)]
    release = ["upgrade", "--install", "mlmodel", str(REPO / "charts" / "mlmodel"), "--namespace", "mlmodel-system"]
    images = [f"{kind}.repository=mlmodel-{name},{kind}.tag=0.1.0" for kind, name in IMAGES.items()]
    subprocess.run([*helm, *release, "--create-namespace", "--wait", "--set", ",".join(images)], check=True)
    models = WORK / "models"
    subprocess.run(
        [sys.executable, str(REPO / "server/examples/train_models.py"), "--out", str(models), "--only", model],
        check=True,
        capture_output=True,
    )
    digest = hashlib.sha256((models / f"{model}.joblib").read_bytes()).hexdigest()
    subprocess.run([*KUBECTL, "create", "namespace", namespace], capture_output=True, check=False)
    store = kubectl(
        "-n",
        namespace,
        "create",
        "configmap",
        "example-models",
        f"--from-file={models / f'{model}.joblib'}",
        "--dry-run=client",
        "-o",
        "yaml",
    )
    kubectl("-n", namespace, "apply", "-f", "-", stdin=store)
    kubectl("-n", namespace, "apply", "-f", str(REPO / "manifests" / "examples" / "model-store.yaml"))
    uri = f"http://model-store/{model}.joblib"
    variants = [{**v, "modelUri": uri, "modelSha256": digest} for v in spec["variants"]]
    md = {
        "apiVersion": "mlmodel.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {**spec, "variants": variants},
    }
    kubectl("apply", "-f", "-", stdin=json.dumps(md))
    wait_ready(namespace, name)


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


def router_pods(name: str, namespace: str, jsonpath: str) -> list[str]:
    """``jsonpath`` of ModelDeployment ``name``'s router pods (selected by the labels the operator gives them)."""
    selector = ",".join(f"{key}={value}" for key, value in names.router_selector(name).items())
    return kubectl("-n", namespace, "get", "pods", "-l", selector, "-o", f"jsonpath={jsonpath}").split()


def router_cpu_seconds(name: str, namespace: str = NAMESPACE) -> float:
    """The CPU seconds the nginx processes of ModelDeployment ``name``'s router pods have used (from /proc: the
    test cluster's pods are processes of this host)."""
    uids = router_pods(name, namespace, "{.items[*].metadata.uid}")
    marks = {form for uid in uids for form in (uid, uid.replace("-", "_"))}
    ticks = 0
    for proc in Path("/proc").iterdir():
        try:
            ours = proc.name.isdigit() and (proc / "comm").read_text().strip() == "nginx"
            if ours and any(mark in (proc / "cgroup").read_text() for mark in marks):
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:  # a process that ended meanwhile
            continue
    return ticks / os.sysconf("SC_CLK_TCK")


def compared_copies(name: str, namespace: str = NAMESPACE) -> int:
    """The copies that ModelDeployment ``name``'s router pods sent with the primary's answer and had compared
    (their /metrics, on the admin port, read from this host)."""
    total = 0
    for ip in router_pods(name, namespace, "{.items[*].status.podIP}"):
        with urllib.request.urlopen(f"http://{ip}:{names.ROUTER_ADMIN_PORT}/metrics", timeout=10) as r:
            total += sum(pair.requests for pair in analysis.comparisons(r.read().decode()).values())
    return total


def measure(
    args: argparse.Namespace, urls: dict[str, str], body: str, routers: dict[str, str] | None = None
) -> tuple[dict[str, list[WrkResult]], dict[str, float]]:
    """wrk on each of ``urls`` in turn, ``args.rounds`` times; with ``routers`` (path -> ModelDeployment), the
    CPU seconds of each path's router pods per 1,000 requests too."""
    script = WORK / "predict.lua"
    script.write_text(lua_post_script(body))
    for url in urls.values():  # warm both paths (connections, the model's first calls)
        run_wrk(url, script, args.connections, 2, cpu=args.client_cpu)
    runs: dict[str, list[WrkResult]] = {path: [] for path in urls}
    cpu: dict[str, float] = {path: 0.0 for path in routers or {}}
    served: dict[str, float] = {path: 0.0 for path in urls}
    for _ in range(args.rounds):
        for path, url in urls.items():
            before = router_cpu_seconds(routers[path]) if routers else 0.0
            result, raw = run_wrk(url, script, args.connections, args.duration, cpu=args.client_cpu)
            if not result.ok:
                raise SystemExit(f"{path}: {result.problems()}\n{raw}")
            if routers:
                cpu[path] += router_cpu_seconds(routers[path]) - before
            served[path] += result.requests_per_sec * args.duration
            runs[path].append(result)
    return runs, {path: 1000 * seconds / served[path] for path, seconds in cpu.items()}


def report(
    runs: dict[str, list[WrkResult]],
    args: argparse.Namespace,
    cpu: dict[str, float] | None = None,
    judged: tuple[str, str] | None = None,
) -> tuple[str, bool]:
    """The paths side by side and the ratios against the targets: of ``judged``'s second path to its first (by
    default, the last two paths)."""

    def median(path: str, value: str) -> float:
        return float(statistics.median(getattr(r, value) for r in runs[path]))

    base, other = judged or tuple(runs)[-2:]
    rps = {p: median(p, "requests_per_sec") for p in runs}
    p50 = {p: median(p, "p50_ms") for p in runs}
    p99 = {p: median(p, "p99_ms") for p in runs}
    added, share = p50[other] - p50[base], rps[other] / rps[base]
    most = MAX_SHADOW_ADDED_P50_MS if cpu else MAX_ADDED_P50_MS
    passed = added <= most and share >= MIN_THROUGHPUT_SHARE
    what = "The shadow comparison's cost" if cpu else "Router overhead"
    header, rule = "| path | req/s | p50 | p99 |", "| --- | ---: | ---: | ---: |"
    if cpu:
        header, rule = header + " router CPU per 1,000 requests |", rule + " ---: |"
    lines = [
        f"{what}, {args.connections} connections, {args.rounds} rounds of {args.duration:.0f} s each way "
        f"(medians), wrk on CPU {args.client_cpu}:",
        "",
        header,
        rule,
        *(
            f"| {p} | {rps[p]:,.0f} | {p50[p]:.2f} ms | {p99[p]:.2f} ms |" + (f" {cpu[p]:.3f} s |" if cpu else "")
            for p in runs
        ),
        "",
        f"- added p50: {added:+.2f} ms (target ≤ {most:g} ms): {'PASS' if added <= most else 'MISS'}",
        f"- throughput: {share:.1%} of {base} (target ≥ {MIN_THROUGHPUT_SHARE:.0%}): "
        f"{'PASS' if share >= MIN_THROUGHPUT_SHARE else 'MISS'}",
    ]
    if cpu:
        lines.append(f"- router CPU per request: {cpu[other] / cpu[base]:.2f}x {base}'s")
    for path in runs:  # the paths not judged, for reference
        if path not in (base, other):
            lines.append(
                f"- against {path}: {other} {p50[other] - p50[path]:+.2f} ms p50, {rps[other] / rps[path]:.1%} of "
                f"its throughput; {base} {p50[base] - p50[path]:+.2f} ms, {rps[base] / rps[path]:.1%}"
            )
    return "\n".join(lines) + "\n", passed


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating direct/router runs")
    parser.add_argument("--client-cpu", default="1", help="CPU list for wrk (taskset -c)")
    parser.add_argument("--markdown", default=DEFAULT_MARKDOWN, help="write the report here ('' not)")
    parser.add_argument("--keep", action="store_true", help="leave the namespace for a look afterwards")
    parser.add_argument("--shadow", action="store_true", help="copies to a shadow with the comparison on and off")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    # One core for the server on either path, as if the router ran on other cores.
    one_core = {"name": "stable", "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "1"}}}
    with fresh_namespace(NAMESPACE, args.keep):
        if args.shadow:
            variants = [{**one_core, "weight": 100}, {**one_core, "name": "shadow", "weight": 0}]
            deploy(NAMESPACE, {"variants": [one_core], "routing": {"router": "always"}}, "logreg", "plain")
            for name, compare in (("copies", False), ("iris", True)):
                mirror = {"variant": "shadow", "percent": 100, "compare": compare}
                deploy(NAMESPACE, {"variants": variants, "routing": {"mirror": mirror}}, "logreg", name)
            paths = {"router": "plain", "router+copies": "copies", "router+copies+comparison": "iris"}
            urls = {path: f"http://{cluster_ip(name)}/predict" for path, name in paths.items()}
            runs, cpu = measure(args, urls, LOGREG_BODY, paths)
            compared = {path: compared_copies(name) for path, name in paths.items() if name != "plain"}
            if compared["router+copies"] or not compared["router+copies+comparison"]:
                raise SystemExit(f"copies compared, by path: {compared}: the comparison was not off, then on")
            text, passed = report(runs, args, cpu)
            text += "- copies compared: " + ", ".join(f"{path} {n:,}" for path, n in compared.items()) + "\n"
        else:
            deploy(NAMESPACE, {"variants": [one_core], "routing": {"router": "always"}})
            urls = {
                "direct": f"http://{cluster_ip('iris-stable')}/predict",
                "router": f"http://{cluster_ip('iris')}/predict",
            }
            text, passed = report(measure(args, urls, BODY)[0], args)
    markdown = str(REPO / "bench" / "SHADOW.md") if args.shadow and args.markdown == DEFAULT_MARKDOWN else args.markdown
    title = (
        "The shadow comparison's cost (`bench/router.py --shadow`)"
        if args.shadow
        else "Router overhead (`bench/router.py`)"
    )
    publish(text, markdown, title)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
