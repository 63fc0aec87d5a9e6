"""``make demo``'s pure part: progress lines, failure reports, the weight patch, the bound, the tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlmodel_demo.report import (
    LoadRow,
    Progress,
    Split,
    bar,
    bound,
    dashboard_query,
    failure_report,
    load_rows,
    load_table,
    next_steps,
    percentile,
    split_table,
    weight_patch,
)
from mlmodel_demo.rollout import Outcome, Rollback, failures, report, share
from mlmodel_testing.load import Result

REPO = Path(__file__).resolve().parents[2]
VARIANTS = [{"name": "stable", "weight": 90}, {"name": "canary", "weight": 10}]


def test_progress_lines_are_timed_from_the_start_and_from_the_step() -> None:
    progress = Progress(t0=100.0)
    line = progress.begin("cluster (make cluster-up)", 112.34) + progress.end(104.2, 112.34, "local")
    assert line == "[demo   12.3s] cluster (make cluster-up) ... done (8.1s): local"
    assert progress.end(1.0, 3.0) == "done (2.0s)"
    assert progress.failed(1.0, 1.5) == "FAILED (0.5s)"


def test_a_failure_names_the_step_and_shows_the_last_30_lines_of_its_log() -> None:
    log = "\n".join(f"line {i}" for i in range(100))
    report = failure_report("images", ".demo/images.log", log).splitlines()
    assert report[0] == "step images failed; the last 30 lines of .demo/images.log:"
    assert report[1:] == [f"  | line {i}" for i in range(70, 100)]
    assert failure_report("chart", ".demo/chart.log", "one\ntwo").splitlines()[1:] == ["  | one", "  | two"]


def test_the_patch_gives_the_canary_its_weight_and_the_other_variant_the_rest() -> None:
    assert weight_patch(VARIANTS, "canary", 50) == [
        {"op": "replace", "path": "/spec/variants/0/weight", "value": 50},
        {"op": "replace", "path": "/spec/variants/1/weight", "value": 50},
    ]
    assert [op["value"] for op in weight_patch(VARIANTS, "canary", 0)] == [100, 0]
    assert [op["value"] for op in weight_patch(VARIANTS[::-1], "canary", 10)] == [10, 90]


@pytest.mark.parametrize(
    "variants", [VARIANTS[:1], [*VARIANTS, {"name": "v3", "weight": 0}], [{"name": "a"}, {"name": "b"}]]
)
def test_the_patch_refuses_anything_but_two_variants_one_of_them_the_canary(variants: list[dict[str, str]]) -> None:
    with pytest.raises(ValueError, match="expected two variants"):
        weight_patch(variants, "canary", 10)


def test_the_bound_is_exact_at_0_and_100_percent_and_about_4_5_standard_deviations_between() -> None:
    assert bound(200, 0.0) == (0, 0)
    assert bound(200, 1.0) == (200, 200)
    assert bound(200, 0.5) == (69, 131)  # 100 +- 4.5 * 7.07
    assert bound(200, 0.1) == (1, 39)  # 20 +- 4.5 * 4.24
    assert bound(2000, 0.1) == (140, 260)  # the router test's +-3 points, 10 % of 2,000: 200 +- 60


def test_a_split_is_within_its_bound_or_not() -> None:
    assert Split(0, 1.0, {"stable": 200}, 0).within_bound("canary")
    assert not Split(0, 1.0, {"stable": 199, "canary": 1}, 0).within_bound("canary")
    assert Split(100, 1.0, {"canary": 200}, 0).within_bound("canary")
    assert not Split(100, 1.0, {"canary": 199, "-": 1}, 1).within_bound("canary")
    assert Split(50, 1.0, {"stable": 97, "canary": 103}, 0).within_bound("canary")
    assert not Split(50, 1.0, {"stable": 140, "canary": 60}, 0).within_bound("canary")
    assert Split(10, 1.0, {"stable": 181, "canary": 19}, 0).requests == 200


def test_the_split_table_has_a_row_and_a_bar_per_step() -> None:
    splits = [Split(0, 2.41, {"stable": 200}, 0), Split(50, 3.0, {"stable": 97, "canary": 103}, 0)]
    lines = split_table(splits, "stable", "canary").splitlines()
    assert lines[0].split("|")[1:-1] == [
        " canary weight ",
        " in effect after ",
        " requests ",
        " stable ",
        " canary ",
        " failed ",
        " canary share                 ",
    ]
    assert lines[2].split("|")[1:-1] == [
        "           0 % ",
        "           2.4 s ",
        "      200 ",
        "    200 ",
        "      0 ",
        "      0 ",
        " ....................   0.0 % ",
    ]
    assert lines[3].endswith("| ##########..........  51.5 % |")
    assert len({len(line) for line in lines}) == 1
    assert bar(0.095) == "##" + "." * 18 and bar(1.0) == "#" * 20


def test_percentiles_are_computed_as_locust_computes_them() -> None:
    # The values of locust.stats.calculate_response_time_percentile for these (importing locust here would
    # monkey-patch the test process with gevent): the slowest time that the top share 1 - q of requests reach.
    times = {10: 50, 20: 40, 100: 9, 500: 1}
    assert [percentile(times, q) for q in (0.5, 0.9, 0.95, 0.99, 1.0)] == [20, 100, 100, 500, 500]
    assert [percentile({3: 2, 9: 2, 11: 996}, q) for q in (0.5, 0.99)] == [11, 11]
    assert percentile({}, 0.5) == 0


def test_load_rows_per_variant_and_all_from_locusts_json() -> None:
    def entry(name: str, times: dict[str, int], failures: int = 0) -> dict[str, object]:
        return {
            "name": name,
            "method": "POST",
            "start_time": 1000.0,
            "last_request_timestamp": 1030.0,
            "num_requests": sum(times.values()),
            "num_failures": failures,
            "response_times": times,
        }

    entries = [
        entry("/predict stable", {"10": 80, "30": 10}),
        entry("/predict canary", {"12": 9, "40": 1}, failures=1),
        entry("/other", {"1": 5}),
    ]
    rows = load_rows(entries, "/predict ")
    assert rows == [
        LoadRow("canary", 10, 1, 10 / 30, 12, 40, 40),
        LoadRow("stable", 90, 0, 3.0, 10, 30, 30),
        LoadRow("all", 100, 1, 100 / 30, 10, 30, 40),
    ]
    text = load_table(rows).splitlines()
    assert text[0] == "| variant | requests | failures | req/s |   p50 |   p95 |   p99 |"
    assert text[-1] == "| all     |      100 |        1 |   3.3 | 10 ms | 30 ms | 40 ms |"
    assert load_rows([], "/predict ") == []


def test_the_prometheus_query_is_the_dashboards_for_one_model_deployment() -> None:
    dashboard = json.loads((REPO / "charts" / "mlmodel" / "files" / "dashboard.json").read_text())
    query = dashboard_query(dashboard, "Requests per second", "demo", "iris")
    assert query == (
        'sum by (variant) (rate(mlmodel_router_requests_total{namespace="demo", model="iris", variant!="none"}[1m]))'
    )


def test_next_steps_are_commands_for_this_cluster() -> None:
    text = next_steps(
        kubeconfig="/repo/.cluster/kubeconfig",
        kubectl_dir="/repo/.cluster/bin",
        namespace="demo",
        md="iris",
        operator_namespace="mlmodel-system",
        operator_pod="mlmodel-operator-7d9-abcde",
        variant_deployment="iris-canary",
        router_deployment="iris-router",
        router_pod="iris-router-5f-xyz",
        admin_port=8081,
        query="sum(x)",
        plugin_dir="/repo/.venv/bin",
        rollout_namespace="demo-rollout",
        registry_namespace="demo-mlflow",
    )
    lines = text.splitlines()
    assert "  export KUBECONFIG=/repo/.cluster/kubeconfig PATH=/repo/.cluster/bin:/repo/.venv/bin:$PATH" in lines
    for command in (
        "kubectl -n demo get md -w",
        "kubectl mlmodel -n demo-rollout status iris",
        "kubectl mlmodel -n demo-rollout history iris",
        "kubectl -n demo-mlflow get md iris -o jsonpath='{.status.models}'",
        "kubectl -n mlmodel-system logs -f mlmodel-operator-7d9-abcde",
        "kubectl -n demo logs -f deploy/iris-canary",
        "kubectl get --raw /api/v1/namespaces/demo/pods/iris-router-5f-xyz:8081/proxy/metrics"
        " | grep ^mlmodel_router_requests_total",
        "make demo-down",
    ):
        assert f"  {command}" in lines
    assert lines[-1] == "  sum(x)"


def test_the_rollout_report_gives_each_steps_share_and_the_outcome() -> None:
    answers = [Result(0.0, 200, "r2" if i < 2 else "r1", "c", weights="r1=80,r2=20") for i in range(10)]
    answers.append(Result(0.0, 502, None, "c", weights="r1=50,r2=50"))
    assert share(answers, "r1=80,r2=20") == (20.0, 10)
    assert share(answers, "r1=50,r2=50") == (0.0, 1) and share(answers, "r2=100") == (0.0, 0)
    failing, broken = Rollback(3, 100.0, 123.4, 0.5), Rollback(4, 200.0, 209.6, None)
    outcome = Outcome(
        61.6, {"r1=80,r2=20": (17.8, 965), "r1=50,r2=50": (52.2, 1033)}, 1.8, 1.5, failing, broken, answers
    )
    text = report(outcome)
    assert "| setWeight 20 |     965 |" in text and "17.8 %" in text and "52.2 %" in text, text
    assert "promoted 62 s after" in text and "aborted after 10 s" in text and "1 of 11 requests failed" in text
    assert "aborted by the analysis 23 s after the edit (the last answer of revision 3 0.5 s after the abort)" in text
    assert "its last answer 1.8 s after the command started (it took 1.5 s)" in text
    assert "1 of 11 requests failed: 1 no revision 502." in text, text


def test_the_failed_requests_are_told_against_the_abort() -> None:
    failing, broken = Rollback(3, 100.0, 123.4, None), Rollback(4, 200.0, 209.6, None)
    before = [Result(120.0, 500, "r3", "c"), Result(123.0, 500, "r3", "c"), Result(124.0, 200, "r1", "c")]
    late = [*before, Result(123.5, 500, "r3", "c")]
    told = [failures(Outcome(61.6, {}, 1.8, 1.5, failing, broken, results)) for results in (before, late, [])]
    assert told == [
        "2 of 3 requests failed, all answered by iris-5xx before its abort.",
        "3 of 4 requests failed, all answered by iris-5xx the last 0.1 s after its abort, before the routers had it.",
        "0 of 0 requests failed.",
    ]
