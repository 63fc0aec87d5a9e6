"""What ``make demo`` prints, computed from what it saw. Pure: no I/O, the clock is passed in."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

TAIL_LINES = 30
BAR_WIDTH = 20
# How far a count may stray from n * p: 4.5 binomial standard deviations, the margin that the router
# e2e test's +-3 points at 2,000 requests give at 10 %.
SIGMAS = 4.5


@dataclass(frozen=True)
class Progress:
    """Progress lines in the harness's style, timed from ``t0``: ``[demo   12.3s] cluster ... done (8.1s)``."""

    t0: float

    def begin(self, title: str, now: float) -> str:
        return f"[demo {now - self.t0:6.1f}s] {title} ... "

    @staticmethod
    def end(started: float, now: float, note: str = "") -> str:
        return f"done ({now - started:.1f}s){': ' + note if note else ''}"

    @staticmethod
    def failed(started: float, now: float) -> str:
        return f"FAILED ({now - started:.1f}s)"


def failure_report(step: str, log: str, text: str, lines: int = TAIL_LINES) -> str:
    """Which step failed, and the tail of its log."""
    tail = text.splitlines()[-lines:]
    return "\n".join([f"step {step} failed; the last {len(tail)} lines of {log}:", *(f"  | {t}" for t in tail)])


def weight_patch(variants: Sequence[Mapping[str, Any]], canary: str, weight: int) -> list[dict[str, Any]]:
    """The JSON patch that gives ``canary`` ``weight`` percent of the traffic and the other variant the rest."""
    if len(variants) != 2 or canary not in {v["name"] for v in variants}:
        raise ValueError(f"expected two variants, one of them {canary!r}: {[v['name'] for v in variants]}")
    return [
        {
            "op": "replace",
            "path": f"/spec/variants/{i}/weight",
            "value": weight if v["name"] == canary else 100 - weight,
        }
        for i, v in enumerate(variants)
    ]


def bound(n: int, p: float, sigmas: float = SIGMAS) -> tuple[int, int]:
    """The counts of ``n`` draws of probability ``p`` that lie within ``sigmas`` standard deviations of ``n p``."""
    spread = sigmas * math.sqrt(n * p * (1 - p))
    return max(0, math.ceil(n * p - spread)), min(n, math.floor(n * p + spread))


@dataclass(frozen=True)
class Split:
    """What one step of the canary saw: the weight set, how long the router took to apply it, who answered."""

    weight: int  # the canary's, in percent
    effect_seconds: float
    counts: Mapping[str, int]  # answers per variant ("-": no variant named, or no answer)
    failed: int  # answers other than 200, and no answer at all

    @property
    def requests(self) -> int:
        return sum(self.counts.values())

    def within_bound(self, canary: str) -> bool:
        """The canary's count is one that ``weight`` makes likely (exactly 0 or all at 0 % and 100 %)."""
        lo, hi = bound(self.requests, self.weight / 100)
        return lo <= self.counts.get(canary, 0) <= hi


def bar(share: float, width: int = BAR_WIDTH) -> str:
    """``share`` (0-1) as a bar of ``width`` characters."""
    filled = round(share * width)
    return "#" * filled + "." * (width - filled)


def split_table(splits: Iterable[Split], stable: str, canary: str) -> str:
    """One row per step: the weight, when it took effect, the answers per variant and the canary's share."""
    rows = []
    for s in splits:
        share = s.counts.get(canary, 0) / s.requests if s.requests else 0.0
        rows.append(
            [
                f"{s.weight} %",
                f"{s.effect_seconds:.1f} s",
                str(s.requests),
                str(s.counts.get(stable, 0)),
                str(s.counts.get(canary, 0)),
                str(s.failed),
                f"{bar(share)} {100 * share:5.1f} %",
            ]
        )
    headers = [f"{canary} weight", "in effect after", "requests", stable, canary, "failed", f"{canary} share"]
    return table(headers, rows, left={6})


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], left: Collection[int] = ()) -> str:
    """A Markdown table, its columns padded to one width; right-aligned but for the ``left`` ones."""
    rows = [list(r) for r in rows]
    widths = [max(len(c) for c in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    rule = "|" + "|".join(f":{'-' * (w + 1)}" if i in left else f"{'-' * (w + 1)}:" for i, w in enumerate(widths)) + "|"
    return "\n".join([line(headers), rule, *map(line, rows)])


@dataclass(frozen=True)
class LoadRow:
    """The requests that one variant answered (or all of them), from Locust's statistics."""

    name: str
    requests: int
    failures: int
    rps: float
    p50: int  # milliseconds
    p95: int
    p99: int


def load_rows(entries: Sequence[Mapping[str, Any]], prefix: str) -> list[LoadRow]:
    """One row per variant, then the total (``all``), from Locust's ``--json-file`` entries whose names are
    ``prefix`` + the variant."""
    entries = sorted((e for e in entries if e["name"].startswith(prefix)), key=lambda e: e["name"])
    if not entries:
        return []
    seconds = max(e["last_request_timestamp"] for e in entries) - min(e["start_time"] for e in entries)
    total: Counter[int] = Counter()
    rows = []
    for e in entries:
        times = Counter({int(ms): n for ms, n in e["response_times"].items()})
        total += times
        rows.append(_row(e["name"].removeprefix(prefix), times, e["num_failures"], seconds))
    return [*rows, _row("all", total, sum(e["num_failures"] for e in entries), seconds)]


def _row(name: str, times: Counter[int], failures: int, seconds: float) -> LoadRow:
    n = sum(times.values())
    return LoadRow(
        name=name,
        requests=n,
        failures=failures,
        rps=n / seconds if seconds > 0 else 0.0,
        p50=percentile(times, 0.50),
        p95=percentile(times, 0.95),
        p99=percentile(times, 0.99),
    )


def percentile(times: Mapping[int, int], q: float) -> int:
    """The response time (ms, as Locust rounds them) within which a share ``q`` of the requests finished,
    as Locust computes it."""
    n = sum(times.values())
    within = int(n * q)
    seen = 0
    for ms in sorted(times, reverse=True):
        seen += times[ms]
        if n - seen <= within:
            return ms
    return 0


def load_table(rows: Iterable[LoadRow]) -> str:
    """Requests, failures, rate and latency percentiles per variant."""
    cells = [
        [r.name, str(r.requests), str(r.failures), f"{r.rps:.1f}", f"{r.p50} ms", f"{r.p95} ms", f"{r.p99} ms"]
        for r in rows
    ]
    return table(["variant", "requests", "failures", "req/s", "p50", "p95", "p99"], cells, left={0})


def dashboard_query(dashboard: Mapping[str, Any], title: str, namespace: str, model: str) -> str:
    """The first query of the dashboard's panel ``title``, for one ModelDeployment, at a 1-minute rate."""
    panel = next(p for p in dashboard["panels"] if p.get("title") == title)
    expr: str = panel["targets"][0]["expr"]
    return expr.replace("$namespace", namespace).replace("$model", model).replace("$__rate_interval", "1m")


def next_steps(
    kubeconfig: str,
    kubectl_dir: str,
    namespace: str,
    md: str,
    operator_namespace: str,
    operator_pod: str,
    variant_deployment: str,
    router_deployment: str,
    router_pod: str,
    admin_port: int,
    query: str,
    plugin_dir: str,
    rollout_namespace: str,
    registry_namespace: str,
) -> str:
    """Where to look next, as commands to paste, each under what it shows."""
    metrics = f"/api/v1/namespaces/{namespace}/pods/{router_pod}:{admin_port}/proxy/metrics"
    commands = [
        ("every change of the resource, as it happens", f"kubectl -n {namespace} get md -w"),
        ("its conditions and Events", f"kubectl -n {namespace} describe md {md}"),
        ("the operator's log (the leader's)", f"kubectl -n {operator_namespace} logs -f {operator_pod}"),
        ("a variant's server log (JSON lines)", f"kubectl -n {namespace} logs -f deploy/{variant_deployment}"),
        ("the router's access log", f"kubectl -n {namespace} logs -f deploy/{router_deployment}"),
        ("the router's counts per variant", f"kubectl get --raw {metrics} | grep ^mlmodel_router_requests_total"),
        (
            "the automated rollout: its steps, analysis and revisions",
            f"kubectl mlmodel -n {rollout_namespace} status {md}",
        ),
        ("every revision and how it ended", f"kubectl mlmodel -n {rollout_namespace} history {md}"),
        (
            "the model from MLflow's registry: what models:/iris@champion is pinned to",
            f"kubectl -n {registry_namespace} get md {md} -o jsonpath='{{.status.models}}'",
        ),
        ("Locust against the entry Service: requests and latency per variant", "make load"),
        ("remove it all, the cluster too", "make demo-down"),
    ]
    return "\n".join(
        [
            "Where to look next (paste into a shell):",
            f"  export KUBECONFIG={kubeconfig} PATH={kubectl_dir}:{plugin_dir}:$PATH",
            *(f"  # {what}\n  {command}" for what, command in commands),
            "Requests/s per variant in Prometheus (a panel of the chart's dashboard, "
            "charts/mlmodel/files/dashboard.json):",
            f"  {query}",
        ]
    )
