"""``make demo`` on the e2e cluster: its cluster part, with the demo's own functions (``mlmodel_demo.canary``).

The example models trained and served from the model store, ``iris-canary.yaml`` applied with their
digests, predictions through the entry Service, then the canary's weight moved 0 -> 10 -> 50 -> 100 with
200 requests at each step: every one answered 200, and the canary's count within a binomial bound of its
weight (4.5 standard deviations; exactly none at 0 % and all at 100 %).

It runs the demo's live part, not the whole ``make demo``, in the test's namespace with the e2e fixtures'
chart install (``operator``): steps 1-3 (``make install``, ``cluster-up``, ``images``) are what the e2e
session has already done, and the demo's own ``helm upgrade --install`` differs from the e2e release only
in its resync period, which the idle test reads, and in the servers' and routers' CPU requests, smaller in the
e2e release (``mlmodel_testing.release.VALUES``). ``make demo-down`` would take the e2e cluster down: it is
tested by hand.
"""

from __future__ import annotations

from pathlib import Path

from mlmodel_demo import canary
from mlmodel_demo.report import bound
from mlmodel_demo.steps import Steps
from mlmodel_testing.cluster import Cluster


def test_the_demo_moves_the_canary_0_10_50_100_and_the_router_serves_each_split(
    cluster: Cluster, operator: None, namespace: str, tmp_path: Path
) -> None:
    steps = Steps(workdir=tmp_path)
    logged = canary.LoggedCluster(cluster.provider, cluster.kubeconfig, cluster.kubectl_bin, steps)

    digests = canary.serve_models(logged, namespace, tmp_path / "models")
    assert set(digests) == {"iris", "iris-v2", "iris-5xx", "iris-slow", "iris-shuffled"}  # the last three to abort
    status = canary.apply_canary(logged, namespace, digests)
    assert status["weights"] == "stable=90,canary=10"
    assert [v["modelSha256"] for v in status["variants"]] == [digests["iris"], digests["iris-v2"]]

    splits = canary.live(steps, logged, namespace)
    assert [s.weight for s in splits] == [0, 10, 50, 100]
    for s in splits:
        assert s.requests == canary.REQUESTS and s.failed == 0, s
        assert set(s.counts) <= {"stable", "canary"}, s
        assert s.within_bound("canary"), (s, bound(s.requests, s.weight / 100))
    assert (tmp_path / "weight-50.log").read_text().count("$ kubectl") >= 2  # the patch, then the polls

    pointers = canary.pointers(logged, namespace, namespace, namespace)
    assert f"export KUBECONFIG={cluster.kubeconfig}" in pointers
    assert "logs -f mlmodel-operator-" in pointers and "/pods/iris-router-" in pointers
    assert f"kubectl mlmodel -n {namespace} status iris" in pointers  # as pasted: the plugin answers
    assert "iris" in cluster.mlmodel("-n", namespace, "status", "iris").stdout
