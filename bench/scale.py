"""The operator at scale: 1,000 ModelDeployments x 2 variants, today's operator against an older one.

On the control-plane-only cluster (``make cluster-up-control-plane``: no node, so pods stay
Pending, which is all a pass looks at), for each operator in turn (``--baseline``, a git revision,
then the working tree), the script

1. creates ``--count`` two-variant ModelDeployments in 10 namespaces, with no operator running;
2. starts the operator (``python -m mlmodel_operator``, every namespace, no leader election) and
   times how long until every ModelDeployment has all its children (two variant Deployments and
   Services, the router's Deployment and ConfigMap, the entry Service);
3. waits until the cluster settles (the controllers have made every pod the Deployments ask for, then
   10 s without a write of the kinds the operator writes), then counts its API requests for
   ``--idle`` seconds from the API server's ``apiserver_request_total``, with the operator running,
   minus the same count over the same time right after it stopped (what the controllers do anyway),
   of the verbs and resources the operator can use;
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

import yaml  # noqa: E402
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


# What the operator can ask for (its RBAC, less the Lease: no leader election here). The controllers'
# requests, such as the deployment controller's PUT deployments/status when a Pending Deployment passes
# its progress deadline ten minutes after it was made, are none of these, whenever they happen.
_KINDS = ("deployments", "services", "configmaps", "poddisruptionbudgets", "horizontalpodautoscalers")
_OPERATOR = (
    {f"{verb} {kind}" for verb in ("APPLY", "GET", "LIST", "WATCH", "DELETE") for kind in _KINDS}
    | {f"{verb} pods" for verb in ("LIST", "WATCH")}
    | {f"{verb} {PLURAL}" for verb in ("LIST", "WATCH", "PATCH")}
    | {f"PATCH {PLURAL}/status", "POST events"}
)
_WRITES = ("APPLY ", "PATCH ", "POST ", "DELETE ")


def operators(requests: Mapping[str, float]) -> dict[str, float]:
    """Of ``delta``'s requests, those the operator could have made."""
    return {key: value for key, value in requests.items() if key in _OPERATOR}


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
    cold_top: dict[str, float]
    cold_cpu: tuple[float, float]  # until the children existed: the machine's CPU busy (%), the operator's CPU (s)
    rss_mib: float
    peak_mib: float
    edit_s: float | None
    settled_s: float | None  # None: the cluster never went quiet, and "idle" was not idle


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
                # resourceVersion 0: from the API server's watch cache, not a quorum read of thousands
                # of objects from etcd every few seconds (the benchmark must not load what it measures)
                [("labelSelector", MANAGED), ("includeObject", "None"), ("resourceVersion", "0")],
                accept="application/json;as=Table;v=v1;g=meta.k8s.io",
            )
        )
        return len(table["rows"])

    def install_crd(self) -> None:
        """The repository's ModelDeployment CRD, as it is now, established."""
        body = yaml.safe_load((REPO / "crds" / "modeldeployments.mlmodel.io.yaml").read_text())
        ext = client.ApiextensionsV1Api(self.api)
        try:
            ext.create_custom_resource_definition(body)
        except client.ApiException as err:
            if err.status != 409:
                raise
            live = ext.read_custom_resource_definition(body["metadata"]["name"])
            body["metadata"]["resourceVersion"] = live.metadata.resource_version
            ext.replace_custom_resource_definition(body["metadata"]["name"], body)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            crd = ext.read_custom_resource_definition(body["metadata"]["name"])
            if any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or []):
                return
            time.sleep(0.5)
        raise SystemExit("the ModelDeployment CRD was not established in 60 s")

    def pods_made(self) -> bool:
        """Every replica the operator's Deployments ask for has its pod (Pending, with no node)."""
        wanted = sum(
            d.spec.replicas or 0 for d in self.apps.list_deployment_for_all_namespaces(label_selector=MANAGED).items
        )
        return self.count("/api/v1/pods") >= wanted

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


def cpu_seconds(pid: int | None = None) -> tuple[float, float]:
    """(busy, total) CPU seconds so far, of the whole machine (all cores, from ``/proc/stat``); or, for
    process ``pid``, (user + system, 0)."""
    tick = os.sysconf("SC_CLK_TCK")
    if pid is not None:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick, 0.0
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values) - idle) / tick, sum(values) / tick


def memory_mib(pid: int) -> tuple[float, float]:
    """RSS and its peak (VmRSS, VmHWM) in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def settle(cluster: Cluster, quiet_s: float, deadline_s: float) -> float | None:
    """Seconds until the cluster is idle: every pod the operator's Deployments ask for exists (the
    controllers, 20 requests/s each by default, take minutes to make thousands; each new pod changes a
    status), and then for ``quiet_s`` nothing wrote what the operator writes. ``None`` if that takes
    more than ``deadline_s``."""
    started = time.monotonic()
    while not cluster.pods_made():
        if time.monotonic() - started > deadline_s:
            return None
        time.sleep(5)
    before, since = cluster.requests(), time.monotonic()
    while time.monotonic() - since < quiet_s:
        if time.monotonic() - started > deadline_s:
            return None
        time.sleep(2)
        now = cluster.requests()
        if any(key.startswith(_WRITES) for key in operators(delta(now, before))):
            since = time.monotonic()
        before = now
    return since - started


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
        at_start, machine_at_start = cluster.requests(), cpu_seconds()
        with operator(source, port) as proc:
            started = time.monotonic()
            while time.monotonic() - started < deadline_s:
                done = cluster.children()
                if done >= wanted:
                    children_s = time.monotonic() - started
                    break
                time.sleep(2)
            print(f"  children: {done}/{wanted} after {time.monotonic() - started:.0f} s", flush=True)
            cold = delta(cluster.requests(), at_start)  # everyone's: the operator's and the controllers'
            busy, total = (now - then for now, then in zip(cpu_seconds(), machine_at_start, strict=True))
            cold_cpu = (100 * busy / total, cpu_seconds(proc.pid)[0])
            cold_top = dict(sorted(cold.items(), key=lambda kv: -kv[1])[:8])
            settled = settle(cluster, quiet_s=10, deadline_s=900)
            print(f"  settled: {'never' if settled is None else f'after {settled:.0f} s'}", flush=True)
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
    own = {k: v - stopped.get(k, 0.0) for k, v in operators(running).items()}
    top = dict(sorted(((k, v / idle_s) for k, v in own.items() if v > 0), key=lambda kv: -kv[1])[:5])
    rps = sum(own.values()) / idle_s
    result = Result(name, children_s, done, rps, top, cold_top, cold_cpu, rss, peak, edit, settled)
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
        ("the cluster quiet, after the children (s)", "settled_s", "{:.0f}"),
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
        cold = ", ".join(f"{k} {v:.0f}" for k, v in r.cold_top.items())
        lines.append(f"\n{r.name}, top requests until the children existed (all clients): {cold}")
        busy, own = r.cold_cpu
        lines.append(
            f"\n{r.name}, until the children existed: the machine's CPU {busy:.0f} % busy, the operator's {own:.0f} s"
        )
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
    cluster.install_crd()
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
    if new.settled_s is None:
        failed.append("settled_s (idle was counted while the cluster still wrote)")
    if failed:
        print(f"MISSED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
