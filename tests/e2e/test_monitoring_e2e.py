"""Monitoring against a real Prometheus (``mlmodel_testing.prometheus``: the pinned server on this host,
scraping the cluster's annotated pods), with the chart's alerts loaded. After traffic to a two-variant
ModelDeployment whose router also copies every request to its canary (``routing.mirror``, for the shadow
comparison's panels and alert) and a model that fails to load (its wrong digest named in Degraded, and never
Ready), every expression of the dashboard (but its rollout row: ``test_rollout_e2e.py``) and every alert's signal
returns data, for each variant where it is per variant (for the shadow's, the shadow), and names only metrics
that something exports.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlmodel_testing.cluster import Cluster
from mlmodel_testing.load import burst
from mlmodel_testing.models import CANARY_EXAMPLE, WRONG_DIGEST, broken_model, deploy_model_store
from mlmodel_testing.prometheus import dashboard_queries, get, query, serve
from mlmodel_testing.release import CHART, helm, restricted_namespace
from mlmodel_testing.status import is_true, snapshot

VARIANTS = {"stable", "canary"}
SHADOW = "canary"  # the variant the router copies requests to: the shadow comparison's series name it
MIRROR = {"spec": {"routing": {"mirror": {"variant": SHADOW, "percent": 100}}}}
# An alert's expression is `<signal> <comparison> <number>` or `absent(<signal>)`.
THRESHOLD = re.compile(r"(?s)(?P<signal>.*\S)\s*(?:>|<|==|!=|>=|<=)\s*[0-9.e+-]+")
ABSENT = re.compile(r"(?s)absent\((?P<signal>.*)\)")


@pytest.fixture
def prometheus(cluster: Cluster, tmp_path: Path) -> Iterator[str]:
    """A Prometheus server on this host, with the chart's alerts: its base URL."""
    with serve(cluster, tmp_path, alert_rules(cluster)) as base:
        yield base


def alert_rules(cluster: Cluster) -> dict[str, Any]:
    """The chart's PrometheusRule, as a rules file."""
    out = helm(cluster, "template", "mlmodel", str(CHART), "--set", "monitoring.prometheusRule.enabled=true").stdout
    (rule,) = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "PrometheusRule"]
    return rule["spec"]  # type: ignore[no-any-return]


def signal(expr: str) -> str:
    """What an alert watches: its expression without the threshold, or inside ``absent``."""
    for pattern in (ABSENT, THRESHOLD):
        found = pattern.fullmatch(expr.strip())
        if found:
            return found.group("signal")
    raise AssertionError(f"an alert expression of unknown shape: {expr}")


def missing(base: str, expr: str, namespace: str) -> str | None:
    """Why ``expr`` fails the test; None when it passes. A per-variant result needs every variant
    of the test's ModelDeployment, a per-ModelDeployment one the test's namespace."""
    result = [r["metric"] for r in query(base, expr)]
    if not result:
        return "no data"
    if any("variant" in r for r in result):
        variants = {r["variant"] for r in result if r.get("namespace", namespace) == namespace and "variant" in r}
        wanted = {SHADOW} if any("primary" in r for r in result) else VARIANTS
        return None if variants >= wanted else f"data only for variants {sorted(variants)}"
    if any("name" in r for r in result) and not any(r.get("namespace") == namespace for r in result):
        return f"no data for namespace {namespace}: {result[:3]}"
    return None


def test_dashboard_and_alerts_have_data_for_every_variant(
    cluster: Cluster, operator: None, namespace: str, models: Path, prometheus: str
) -> None:
    restricted_namespace(cluster, namespace)
    deploy_model_store(cluster, namespace, models)
    cluster.kubectl("-n", namespace, "apply", "-f", str(CANARY_EXAMPLE))
    cluster.kubectl("-n", namespace, "patch", "md", "iris", "--type", "merge", "-p", json.dumps(MIRROR))
    cluster.apply(broken_model(namespace))
    cluster.wait_until("iris to be Ready", lambda: is_true(cluster, namespace, "iris", "Ready"), 300, interval=2)
    degraded = cluster.wait_until(
        "broken to be Degraded", lambda: is_true(cluster, namespace, "broken", "Degraded"), 240
    )
    # The model whose digest does not match says so, with both digests, and is never Ready.
    real = hashlib.sha256((models / "iris.joblib").read_bytes()).hexdigest()
    assert degraded["reason"] == "ModelLoadFailed", degraded
    assert WRONG_DIGEST in degraded["message"] and real in degraded["message"], degraded
    _, conditions, _ = snapshot(cluster, namespace, "broken")
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"]) == ("False", "ModelLoadFailed"), conditions

    rules = alert_rules(cluster)
    expressions = dashboard_queries(namespace)
    for group in rules["groups"]:
        for rule in group["rules"]:
            expressions[f"alert {rule['alert']}"] = signal(rule["expr"])

    # 17 panel queries (5 of them the shadow comparison's), the 2 variables, the 9 alerts.
    assert len(expressions) == 28, sorted(expressions)

    # Traffic through the router (90/10) and straight to each variant, until every query has data.
    failures: dict[str, str] = {}

    def all_have_data() -> bool:
        with cluster.service_url(namespace, "iris", 80) as router:
            assert all(r.status == 200 for r in burst(router, 100)), "a request through the router failed"
        for variant in VARIANTS:
            with cluster.service_url(namespace, f"iris-{variant}", 80) as base:
                assert all(r.status == 200 for r in burst(base, 10)), f"a request to {variant} failed"
        failures.clear()
        for name, expr in expressions.items():
            why = missing(prometheus, expr, namespace)
            if why:
                failures[name] = f"{why}: {expr}"
        return not failures

    try:
        cluster.wait_until("every dashboard and alert expression to have data", all_have_data, 240, interval=5)
    except AssertionError:
        lines = "\n".join(f"{name}: {why}" for name, why in failures.items())
        raise AssertionError(f"expressions without data:\n{lines}") from None

    # Every metric named anywhere is exported by something that was scraped.
    exported = set(json.loads(get(f"{prometheus}/api/v1/label/__name__/values"))["data"])
    named = set(re.findall(r"\bmlmodel_[a-z0-9_]+", json.dumps(expressions)))
    assert named <= exported, named - exported
    # The alerts load and evaluate without error, and none fires on a healthy ModelDeployment.
    loaded = json.loads(get(f"{prometheus}/api/v1/rules"))["data"]["groups"]
    states = {r["name"]: (r["health"], r["state"]) for g in loaded for r in g["rules"]}
    assert len(states) == 9 and all(health == "ok" for health, _ in states.values()), states
    # Other tests' ModelDeployments may fire alerts meanwhile (the suite runs side by side): this namespace's only.
    firing = query(prometheus, f'ALERTS{{alertstate="firing",namespace="{namespace}"}}')
    assert all(a["metric"].get("name") == "broken" for a in firing), firing
