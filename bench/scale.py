"""The operator at scale: 1,000 ModelDeployments x 2 variants, today's operator against an older one.

On the control-plane-only cluster (``make cluster-up-control-plane``: no node, so pods stay
Pending, which is all a pass looks at), for each operator in turn (``--baseline``, a git revision,
then the working tree), the script

1. creates ``--count`` two-variant ModelDeployments in 10 namespaces, with no operator running;
2. starts the operator (``python -m mlmodel_operator``, every namespace, no leader election) and
   times how long until every ModelDeployment has all its children (two variant Deployments and
   Services, the router's Deployment and ConfigMap, the entry Service);
3. waits until the operator settles (no request for 10 s), then counts its API requests for
   ``--idle`` seconds from the API server's ``apiserver_request_total``, with the operator running,
   minus the same count over the same time right after it stopped (what the controllers do anyway);
4. reads its RSS (and peak) from ``/proc`` meanwhile;
5. edits one ModelDeployment (a new env entry on a variant) three times and times how long until
   its Deployment has it;
6. stops it and deletes the namespaces.

It prints both side by side with the ratios, and checks the targets: children in <= 120 s, <= 1
request/s at idle, RSS <= 300 MiB, an edit applied in <= 2 s.

    .venv/bin/python bench/scale.py                         # writes bench/SCALE.md
    .venv/bin/python bench/scale.py --count 100 --markdown ''   # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("KUBECONFIG", str(REPO / ".cluster" / "kubeconfig"))

from kubernetes import client, config  # noqa: E402

GROUP, VERSION, PLURAL = "mlmodel.io", "v1alpha1", "modeldeployments"
MANAGED = "app.kubernetes.io/managed-by=mlmodel-operator"
NAMESPACES = 10
SHA = "d466fded41c4a559228ec0a59d7fab20d29353302d76491af19d4ce400b63cb4"
CHILDREN = 7  # per ModelDeployment: 3 Deployments (a, b, router), 3 Services (a, b, entry), 1 ConfigMap
TARGETS = {"children_s": 120.0, "idle_rps": 1.0, "rss_mib": 300.0, "edit_s": 2.0}
_SAMPLE = re.compile(r"^apiserver_request_total\{(.*)\} ([0-9.e+]+)$")


def request_counts(metrics: str) -> dict[tuple[str, str], float]:
    """``apiserver_request_total`` by (verb, resource[/subresource]), resource requests only."""
    counts: dict[tuple[str, str], float] = {}
    for line in metrics.splitlines():
        match = _SAMPLE.match(line)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        if not labels.get("resource"):
            continue
        resource = "/".join(filter(None, (labels["resource"], labels.get("subresource"))))
        key = (labels.get("verb", ""), resource)
        counts[key] = counts.get(key, 0.0) + float(match.group(2))
    return counts


def delta(after: Mapping[tuple[str, str], float], before: Mapping[tuple[str, str], float]) -> dict[str, float]:
    """What grew between two ``request_counts``, as "VERB resource" -> count."""
    grown = {f"{verb} {res}": after[(verb, res)] - before.get((verb, res), 0.0) for verb, res in after}
    return {key: value for key, value in grown.items() if value > 0}


@dataclass
class Result:
    name: str
    children_s: float | None  # None: not every child within the deadline
    children_done: int
    idle_rps: float
    idle_top: dict[str, float]
    rss_mib: float
    peak_mib: float
    edit_s: float | None


class Cluster:
    def __init__(self) -> None:
        config.load_kube_config()
        self.api = client.ApiClient()
        self.core, self.apps = client.CoreV1Api(self.api), client.AppsV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    def _get(self, path: str, query: Sequence[tuple[str, str]] = (), accept: str = "application/json") -> bytes:
        response = self.api.call_api(
            path,
            "GET",
            query_params=list(query),
            header_params={"Accept": accept},
            _preload_content=False,
            _return_http_data_only=True,
            auth_settings=["BearerToken"],
        )
        return bytes(response.data)

    def requests(self) -> dict[tuple[str, str], float]:
        return request_counts(self._get("/metrics", accept="text/plain").decode())

    def count(self, path: str) -> int:
        """How many objects with the operator's label there are, listed as a Table (names only, as
        ``kubectl get`` does: remainingItemCount is not given with a label selector)."""
        table = json.loads(
            self._get(
                path,
                [("labelSelector", MANAGED), ("includeObject", "None")],
                accept="application/json;as=Table;v=v1;g=meta.k8s.io",
            )
        )
        return len(table["rows"])

    def children(self) -> int:
        return sum(self.count(path) for path in ("/apis/apps/v1/deployments", "/api/v1/services", "/api/v1/configmaps"))


def model_deployment(name: str, namespace: str) -> dict[str, Any]:
    variant = {"modelUri": "file:///models/iris.joblib", "modelSha256": SHA, "replicas": 1}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"variants": [{"name": "a", "weight": 50, **variant}, {"name": "b", "weight": 50, **variant}]},
    }


def namespaces(prefix: str) -> list[str]:
    return [f"{prefix}-{i}" for i in range(NAMESPACES)]


def create(cluster: Cluster, prefix: str, count: int) -> None:
    for ns in namespaces(prefix):
        cluster.core.create_namespace({"metadata": {"name": ns}})
    started = time.monotonic()
    for i in range(count):
        ns = namespaces(prefix)[i % NAMESPACES]
        cluster.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, model_deployment(f"md{i}", ns))
    print(f"  created {count} ModelDeployments in {time.monotonic() - started:.0f} s", flush=True)


def delete(cluster: Cluster, prefix: str) -> None:
    for ns in namespaces(prefix):
        with contextlib.suppress(client.ApiException):
            cluster.core.delete_namespace(ns)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        left = {n.metadata.name for n in cluster.core.list_namespace().items} & set(namespaces(prefix))
        if not left:
            return
        time.sleep(5)
    raise SystemExit(f"namespaces {sorted(left)} were not deleted in 10 minutes")


@contextlib.contextmanager
def operator(source: Path, metrics_port: int) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "PYTHONPATH": str(source),
        "METRICS_PORT": str(metrics_port),
        "LOG_FORMAT": "json",
        "ROUTER_IMAGE": "mlmodel-router:0.1.0",
    }
    log = (REPO / ".bench" / f"scale-operator-{metrics_port}.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "mlmodel_operator"], env=env, stdout=log, stderr=log)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def memory_mib(pid: int) -> tuple[float, float]:
    """RSS and its peak (VmRSS, VmHWM) in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def settle(cluster: Cluster, quiet_s: float, deadline_s: float) -> None:
    """Until no write to anything but Leases for ``quiet_s`` (the operator is done), or ``deadline_s``."""
    end, before, since = time.monotonic() + deadline_s, cluster.requests(), time.monotonic()
    while time.monotonic() < end and time.monotonic() - since < quiet_s:
        time.sleep(2)
        now = cluster.requests()
        reads = ("GET ", "LIST ", "WATCH ")
        if any(not k.startswith(reads) and "leases" not in k for k in delta(now, before)):
            since = time.monotonic()
        before = now


def edit_seconds(cluster: Cluster, namespace: str, rounds: int = 3) -> float | None:
    """The slowest of ``rounds`` edits: a new env entry on variant a, until md0-a's Deployment has it."""
    slowest = 0.0
    for n in range(rounds):
        variants = model_deployment("md0", namespace)["spec"]["variants"]
        variants[0]["env"] = [{"name": "EDIT", "value": str(n)}]
        started = time.monotonic()
        patch = {"spec": {"variants": variants}}  # a merge patch: the list is replaced whole
        cluster.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "md0", patch)
        while True:
            dep = cluster.apps.read_namespaced_deployment("md0-a", namespace)
            env = {e.name: e.value for e in dep.spec.template.spec.containers[0].env or []}
            if env.get("EDIT") == str(n):
                break
            if time.monotonic() - started > 60:
                return None
            time.sleep(0.05)
        slowest = max(slowest, time.monotonic() - started)
    return slowest


def run(name: str, source: Path, prefix: str, count: int, deadline_s: float, idle_s: float, port: int) -> Result:
    print(f"{name}: {source}", flush=True)
    cluster = Cluster()
    wanted = count * CHILDREN
    done, children_s = 0, None
    try:
        create(cluster, prefix, count)
        with operator(source, port) as proc:
            started = time.monotonic()
            while time.monotonic() - started < deadline_s:
                done = cluster.children()
                if done >= wanted:
                    children_s = time.monotonic() - started
                    break
                time.sleep(2)
            print(f"  children: {done}/{wanted} after {time.monotonic() - started:.0f} s", flush=True)
            settle(cluster, quiet_s=10, deadline_s=120)
            before = cluster.requests()
            time.sleep(idle_s)
            running = delta(cluster.requests(), before)
            rss, peak = memory_mib(proc.pid)
            edit = edit_seconds(cluster, namespaces(prefix)[0])
        before = cluster.requests()
        time.sleep(idle_s)
        stopped = delta(cluster.requests(), before)
    finally:
        delete(cluster, prefix)
    own = {k: v - stopped.get(k, 0.0) for k, v in running.items()}
    top = dict(sorted(((k, v / idle_s) for k, v in own.items() if v > 0), key=lambda kv: -kv[1])[:5])
    rps = sum(own.values()) / idle_s
    result = Result(name, children_s, done, rps, top, rss, peak, edit)
    print(f"  {result}", flush=True)
    return result


def checkout(revision: str, into: Path) -> Path:
    """The operator package at ``revision``, unpacked under ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", revision, "operator/mlmodel_operator"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "operator"


def table(results: Sequence[Result], count: int, idle_s: float) -> str:
    """Markdown: one column per operator, then the ratio of the last to the first (when there are two)."""
    rows = [
        ("children of every ModelDeployment (s)", "children_s", "{:.0f}"),
        ("API requests/s at idle", "idle_rps", "{:.2f}"),
        ("RSS (MiB)", "rss_mib", "{:.0f}"),
        ("peak RSS (MiB)", "peak_mib", "{:.0f}"),
        ("an edit applied (s, slowest of 3)", "edit_s", "{:.2f}"),
    ]
    paired = len(results) == 2
    lines = [
        f"{count} ModelDeployments x 2 variants, control-plane-only cluster, idle counted over {idle_s:.0f} s.",
        "",
        "| | " + " | ".join(r.name for r in results) + (" | ratio" if paired else "") + " | target |",
        "|---|" + "---:|" * (len(results) + paired + 1),
    ]
    for label, key, fmt in rows:
        values = [getattr(r, key) for r in results]
        shown = [fmt.format(v) if v is not None else "not reached" for v in values]
        ratio = [f"{values[1] / values[0]:.2f}x" if values[0] and values[1] else "-"] if paired else []
        target = f"<= {TARGETS[key]:g}" if key in TARGETS else ""
        lines.append(f"| {label} | " + " | ".join([*shown, *ratio, target]) + " |")
    for r in results:
        if r.children_s is None:
            lines.append(f"\n{r.name}: {r.children_done} of {count * CHILDREN} children when the deadline came.")
        top = ", ".join(f"{k} {v:.2f}" for k, v in r.idle_top.items()) or "none"
        lines.append(f"\n{r.name}, top requests at idle (per s): {top}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument(
        "--baseline", default="52ea580", help="git revision of the operator to compare with ('': none, this one alone)"
    )
    parser.add_argument("--deadline", type=float, default=300, help="seconds to wait for the children")
    parser.add_argument("--idle", type=float, default=60, help="seconds of idle to count requests over")
    parser.add_argument("--markdown", default=str(REPO / "bench" / "SCALE.md"))
    args = parser.parse_args(argv)
    cluster = Cluster()
    if cluster.core.list_node().items:
        raise SystemExit("this cluster has nodes: run it on `make cluster-up-control-plane` (pods must stay Pending)")
    (REPO / ".bench").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        results = []
        if args.baseline:
            baseline = checkout(args.baseline, Path(tmp))
            results.append(
                run(f"operator at {args.baseline}", baseline, "scale-old", args.count, args.deadline, args.idle, 9181)
            )
        results.append(run("this operator", REPO / "operator", "scale-new", args.count, args.deadline, args.idle, 9182))
    text = table(results, args.count, args.idle)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text("# Operator at scale (`bench/scale.py`)\n\n" + text)
    new = results[-1]
    failed = [key for key, limit in TARGETS.items() if getattr(new, key) is None or getattr(new, key) > limit]
    if failed:
        print(f"MISSED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
