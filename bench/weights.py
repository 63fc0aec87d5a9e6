"""How fast a weight change reaches the routers: live weights against a router configuration that rolls out.

On the test cluster (``make cluster-up images``; the chart is installed, or upgraded, with the local
images), one ModelDeployment ``iris`` with two variants and 2 router pods serves a steady load through
its entry Service (``--rate`` requests a second, each a new connection). The script then

1. flips the weights ``--flips`` times between 90/10 and 50/50: for each flip, the time from the
   status change (the operator's pass, seen through a watch on the ModelDeployment) until each router
   pod routes by the new weights (a request straight to each pod, every 10 ms, names them in
   ``X-Router-Weights``): the slowest pod's time is the flip's;
2. as the baseline, changes the router's configuration ``--rollouts`` times (``routing.connectionsPerClient``),
   which rolls new router pods out, as every weight change did before the weights went live: the time
   from the status change until 20 answers in a row through the entry Service carry the new configuration
   (``X-Router-Config``);
3. prints p50 and max of both, side by side with their ratio, and the requests of the load that failed.

Targets for the flips: p50 ≤ 1 s, max ≤ 2 s, 0 failed requests.

    .venv/bin/python bench/weights.py                        # 20 flips, 3 rollouts: writes bench/WEIGHTS.md
    .venv/bin/python bench/weights.py --flips 5 --rollouts 1 --markdown ''   # a quick look
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from mlmodel_testing.cluster import Cluster
from mlmodel_testing.load import burst, call, constant_load, summary
from router import KUBECTL, REPO, cluster_ip, deploy, fresh_namespace, kubectl, publish

NAMESPACE = "bench-weights"

SPLITS = ({"stable": 90, "canary": 10}, {"stable": 50, "canary": 50})
TARGET_P50_S, TARGET_MAX_S = 1.0, 2.0
POLL = 0.01  # seconds between two looks at the status or at a router pod


class StatusWatch:
    """``kubectl get --watch`` on ModelDeployment iris: when each ``status.weights`` and
    ``status.observedGeneration`` was first seen."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, str, int]] = []  # (time.monotonic(), weights, observedGeneration)
        self._proc = subprocess.Popen(
            [*KUBECTL, "-n", NAMESPACE, "get", "md", "iris", "--watch", "-o", "json", "--output-watch-events"],
            stdout=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        decoder, text = json.JSONDecoder(), ""
        for line in self._proc.stdout:
            text += line
            try:
                event, _ = decoder.raw_decode(text.strip())
            except ValueError:
                continue
            text = ""
            status = event["object"].get("status") or {}
            self.seen.append((time.monotonic(), status.get("weights", ""), int(status.get("observedGeneration", 0))))

    def when(self, wanted: Callable[[str, int], bool], since: float, timeout: float = 120) -> float:
        """When the first status since ``since`` that is ``wanted`` (weights, observedGeneration) was seen."""

        def first() -> float | None:
            return next((t for t, w, g in list(self.seen) if t >= since and wanted(w, g)), None)

        return float(Cluster.wait_until("the status", first, timeout, POLL))

    def stop(self) -> None:
        self._proc.terminate()


def router_pods() -> list[str]:
    """The IPs of the router's pods that are ready."""
    pods = json.loads(kubectl("-n", NAMESPACE, "get", "pods", "-l", "app.kubernetes.io/component=router", "-o", "json"))
    return [
        p["status"]["podIP"]
        for p in pods["items"]
        if not p["metadata"].get("deletionTimestamp")
        and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])
    ]


def patch(spec: dict[str, Any]) -> None:
    kubectl("-n", NAMESPACE, "patch", "md", "iris", "--type=merge", "-p", json.dumps({"spec": spec}))


def flip(watch: StatusWatch, pods: list[str], variants: list[dict[str, Any]], split: dict[str, int]) -> float:
    """Seconds from the status naming ``split`` (of ``variants``, as applied) until every pod in ``pods``
    routes by it."""
    weights = ",".join(f"{name}={weight}" for name, weight in split.items())
    started = time.monotonic()
    patch({"variants": [{**v, "weight": split[v["name"]]} for v in variants]})
    decided = watch.when(lambda w, _: w == weights, started)
    arrived: list[float] = []
    for pod in pods:

        def serves(pod: str = pod) -> float | None:
            result = call(f"http://{pod}:8080")
            return result.sent if result.weights == weights else None

        arrived.append(float(Cluster.wait_until(f"router pod {pod} to route by {weights}", serves, 30, POLL)))
    return max(arrived) - decided


def rollout(watch: StatusWatch, connections: int) -> float:
    """Seconds from the status of a new router configuration until 20 answers in a row carry it."""
    generation = int(kubectl("-n", NAMESPACE, "get", "md", "iris", "-o", "jsonpath={.metadata.generation}"))
    started = time.monotonic()
    patch({"routing": {**ROUTING, "connectionsPerClient": connections}})
    decided = watch.when(lambda _, g: g > generation, started)
    base = f"http://{cluster_ip('iris', NAMESPACE)}"
    annotation = "jsonpath={.spec.template.metadata.annotations.mlmodel\\.io/router-config}"
    digest = kubectl("-n", NAMESPACE, "get", "deploy", "iris-router", "-o", annotation)[:16]

    def served() -> float | None:
        results = burst(base, 20, workers=4)
        return max(r.sent for r in results) if all(r.config == digest for r in results) else None

    return float(Cluster.wait_until(f"every answer from router config {digest}", served, 120, POLL)) - decided


STABLE: dict[str, Any] = {"name": "stable"}  # both serve the example iris model (``router.deploy``)
CANARY: dict[str, Any] = {"name": "canary"}
ROUTING: dict[str, Any] = {"replicas": 2, "connectionsPerClient": 64}


def measure(args: argparse.Namespace) -> tuple[list[float], list[float], str]:
    deploy(NAMESPACE, {"variants": [{**STABLE, "weight": 90}, {**CANARY, "weight": 10}], "routing": ROUTING})
    Cluster.wait_until("2 ready router pods", lambda: len(router_pods()) == 2, 120, POLL)
    watch = StatusWatch()
    flips: list[float] = []
    rollouts: list[float] = []
    try:
        with constant_load(f"http://{cluster_ip('iris', NAMESPACE)}", args.rate) as load:
            pods = router_pods()
            variants = json.loads(kubectl("-n", NAMESPACE, "get", "md", "iris", "-o", "json"))["spec"]["variants"]
            for i in range(args.flips):
                flips.append(flip(watch, pods, variants, SPLITS[(i + 1) % 2]))
            if sorted(router_pods()) != sorted(pods):
                raise SystemExit(f"the router pods changed while the weights flipped: {pods} -> {router_pods()}")
            for i in range(args.rollouts):
                rollouts.append(rollout(watch, 65 + i))
            results = list(load.results)
    finally:
        watch.stop()
    return flips, rollouts, summary(results)


def report(flips: list[float], rollouts: list[float], failed: str, args: argparse.Namespace) -> tuple[str, bool]:
    p50, worst = statistics.median(flips), max(flips)
    base50 = statistics.median(rollouts) if rollouts else float("nan")
    passed = p50 <= TARGET_P50_S and worst <= TARGET_MAX_S and failed.startswith("0 of")
    lines = [
        f"A weight change, from the status change to every router pod routing by it; 2 router pods, "
        f"{args.rate:g} requests/s through the entry Service meanwhile:",
        "",
        "| change | count | p50 | max |",
        "| --- | ---: | ---: | ---: |",
        f"| live weights (a flip 90/10 <-> 50/50) | {len(flips)} | {p50:.2f} s | {worst:.2f} s |",
        f"| baseline: a router configuration rolled out | {len(rollouts)} | {base50:.2f} s | "
        f"{max(rollouts, default=float('nan')):.2f} s |",
        "",
        f"- p50 of live weights: {base50 / p50:.0f}x faster than a rollout" if rollouts else "- no baseline run",
        f"- p50 {p50:.2f} s (target ≤ {TARGET_P50_S:.0f} s), max {worst:.2f} s (target ≤ {TARGET_MAX_S:.0f} s): "
        f"{'PASS' if p50 <= TARGET_P50_S and worst <= TARGET_MAX_S else 'MISS'}",
        f"- failed requests of the load: {failed}",
    ]
    return "\n".join(lines) + "\n", passed


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flips", type=int, default=20)
    parser.add_argument("--rollouts", type=int, default=3, help="router configurations rolled out, the baseline")
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second through the entry Service")
    parser.add_argument("--markdown", default=str(REPO / "bench" / "WEIGHTS.md"), help="write the report here ('' not)")
    parser.add_argument("--keep", action="store_true", help="leave the namespace for a look afterwards")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with fresh_namespace(NAMESPACE, args.keep):
        text, passed = report(*measure(args), args)
    publish(text, args.markdown, "Live weights (`bench/weights.py`)")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
