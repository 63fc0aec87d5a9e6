"""A rollout's analysis, pure: the routers' counts read, differenced and judged, and the passes of a rollout that
judge its canary at each interval, abort it, and go on across a restart. The same counts from a real nginx:
``test_router_nginx.py``."""

from __future__ import annotations

from typing import Any

import pytest
from mlmodel_operator import analysis, spec
from mlmodel_operator.analysis import Tally
from test_render import SHA, resource
from test_rollout import V2, Passes, served

METRICS = """# TYPE mlmodel_router_requests_total counter
mlmodel_router_requests_total{model="iris",variant="r1",status_class="2xx"} 90
mlmodel_router_requests_total{model="iris",variant="r1",status_class="4xx"} 2
mlmodel_router_requests_total{model="iris",variant="r1",status_class="5xx"} 0
mlmodel_router_requests_total{model="iris",variant="r2",status_class="2xx"} 3
mlmodel_router_requests_total{model="iris",variant="r2",status_class="5xx"} 7
mlmodel_router_requests_total{model="iris",variant="none",status_class="4xx"} 1
# TYPE mlmodel_router_upstream_latency_seconds histogram
mlmodel_router_upstream_latency_seconds_bucket{model="iris",variant="r1",le="0.005"} 80
mlmodel_router_upstream_latency_seconds_bucket{model="iris",variant="r1",le="0.01"} 92
mlmodel_router_upstream_latency_seconds_bucket{model="iris",variant="r1",le="+Inf"} 92
mlmodel_router_upstream_latency_seconds_sum{model="iris",variant="r1"} 0.3
mlmodel_router_upstream_latency_seconds_count{model="iris",variant="r1"} 92
mlmodel_router_upstream_latency_seconds_bucket{model="iris",variant="r2",le="0.005"} 0
mlmodel_router_upstream_latency_seconds_bucket{model="iris",variant="r2",le="0.01"} 0
mlmodel_router_upstream_latency_seconds_bucket{model="iris",variant="r2",le="+Inf"} 10
"""
INF = float("inf")
GATES = spec.Analysis(interval=10, min_requests=5, min_success_rate=95, max_p99_ms=100, max_p99_ratio=3)


def test_a_router_pods_metrics_parse_into_each_variants_counts() -> None:
    counts = analysis.parse(METRICS)
    assert counts["r1"] == Tally(92, 0, ((0.005, 80), (0.01, 92), (INF, 92)))
    assert counts["r2"] == Tally(10, 7, ((0.005, 0), (0.01, 0), (INF, 10)))
    assert counts["none"] == Tally(1, 0, ())


def test_an_interval_is_the_difference_over_pods_and_a_restarted_pod_counts_from_zero() -> None:
    start = {"a": {"r2": Tally(10, 1, ((0.01, 10), (INF, 10)))}, "b": {"r2": Tally(50, 0, ((0.01, 50), (INF, 50)))}}
    end = {
        "a": {"r2": Tally(30, 6, ((0.01, 25), (INF, 30)))},
        "b": {"r2": Tally(4, 0, ((0.01, 4), (INF, 4)))},  # restarted: fewer than at the start
        "c": {"r2": Tally(1, 1, ((0.01, 1), (INF, 1)))},  # new since the start
    }
    assert analysis.window(start, end) == {"r2": Tally(25, 6, ((0.01, 20), (INF, 25)))}


def test_p99_is_interpolated_in_its_bucket_like_histogram_quantile() -> None:
    assert Tally(100, 0, ((0.01, 0), (0.02, 100), (INF, 100))).p99_ms() == pytest.approx(19.9)
    assert Tally(100, 0, ((0.01, 98), (0.05, 100), (INF, 100))).p99_ms() == pytest.approx(30)
    assert Tally(10, 0, ((0.01, 0), (INF, 10))).p99_ms() == pytest.approx(10)  # in +Inf: the highest bound
    assert Tally().p99_ms() is None


def test_the_gates_judge_the_canary_and_below_min_requests_nothing_is_judged() -> None:
    stable = Tally(100, 0, ((0.005, 99), (0.01, 100), (INF, 100)))
    fine = analysis.judge(GATES, Tally(20, 0, ((0.005, 19), (0.01, 20), (INF, 20))), stable)
    assert fine.result == analysis.PASSED and all(m.passed for m in fine.metrics)
    failing = analysis.judge(GATES, Tally(20, 12, ((0.005, 20), (INF, 20))), stable)
    assert failing.result == analysis.FAILED and [m.name for m in failing.failed] == ["successRate"]
    assert failing.failed[0].describe() == "successRate 40 (threshold >= 95 %)"
    slow = analysis.judge(GATES, Tally(20, 0, ((0.005, 0), (0.05, 20), (INF, 20))), stable)
    assert [m.name for m in slow.failed] == ["p99LatencyRatio"], slow  # 49.6 ms: under 100, but 5x the stable's
    few = analysis.judge(GATES, Tally(4, 4, ((0.005, 4), (INF, 4))), stable)
    assert few.result == analysis.INCONCLUSIVE and few.metrics[0].value == 0 and few.metrics[0].passed is None


def test_a_prometheus_query_is_judged_by_its_bounds() -> None:
    gates = spec.Analysis(min_requests=1, prometheus=spec.Prometheus("http://p:9090", "q", max=0.05))
    canary = Tally(10, 0, ((INF, 10),))
    assert analysis.judge(gates, canary, Tally(), 0.01).result == analysis.PASSED
    assert analysis.judge(gates, canary, Tally(), 0.5).failed[0].threshold == "<= 0.05"
    assert analysis.judge(gates, canary, Tally(), None).result == analysis.INCONCLUSIVE  # Prometheus did not answer


ANALYSIS = {"interval": "10s", "minRequests": 5, "minSuccessRate": 95, "failureLimit": 1}


def _judged(analysis_spec: dict[str, Any]) -> Passes:
    """Passes of a rollout with ``analysis_spec``, revision 2 at 20 % at second 2 (its first interval starts)."""
    passes = Passes({**ROLLOUT_STEPS, "analysis": analysis_spec})
    passes.run("https://models.example.com/iris/v1.joblib", 0)
    passes.run(V2, 1)
    return passes


ROLLOUT_STEPS = {"steps": [{"setWeight": 20}, {"pause": {"duration": "60s"}}], "scaleDownDelay": "30s"}
UP = {"r1": (2, None), "r2": (1, None)}


def _counts(r1: int, r2: int, r2_errors: int) -> analysis.Snapshot:
    return {
        "router-a": {"r1": Tally(r1, 0, ((0.01, r1), (INF, r1))), "r2": Tally(r2, r2_errors, ((0.01, r2), (INF, r2)))}
    }


def test_a_canary_that_fails_more_intervals_than_failure_limit_is_aborted_with_the_metric_named() -> None:
    passes = _judged(ANALYSIS)
    started = passes.run(V2, 2, UP, _counts(0, 0, 0))
    assert served(started) == {"r1": 80, "r2": 20} and started.wake == 10.0  # the first interval, 10 s
    assert started.baseline == (passes.at(2), _counts(0, 0, 0))
    once = passes.run(V2, 12, UP, _counts(80, 20, 15))
    assert served(once) == {"r1": 80, "r2": 20} and passes.events[-1] == "AnalysisFailed"  # 1 failure is allowed
    judged = passes.status["rollout"]["analysis"]
    assert (judged["failedIntervals"], judged["lastInterval"]["requests"]) == (1, 20), judged
    assert judged["lastInterval"]["metrics"] == [
        {"name": "successRate", "value": 25.0, "threshold": ">= 95 %", "passed": False}
    ]
    aborted = passes.run(V2, 22, UP, _counts(160, 40, 30))
    assert served(aborted) == {"r1": 100} and passes.status["rollout"]["phase"] == "Aborted"
    assert passes.messages[-1] == (
        "revision 2 failed its analysis: successRate 25 (threshold >= 95 %), with 15 5xx of 20 answers in the last"
        " 10 s (2 failed intervals; failureLimit 1); all traffic is back on revision 1"
    )


def test_intervals_keep_their_cadence_when_the_passes_come_late() -> None:
    """A busy operator judges each interval 3 s late: the next one still starts on the cadence (12 s, 22 s), so the
    second failed interval aborts at 22 s, not 25 s; a pass a whole interval late starts the next from itself."""
    passes = _judged(ANALYSIS)
    passes.run(V2, 2, UP, _counts(0, 0, 0))
    late = passes.run(V2, 15, UP, _counts(80, 20, 15))
    assert late.state.judged is not None and late.state.judged.started == "2026-01-01T00:00:12Z", late.state.judged
    assert late.wake == 7.0 and late.baseline == ("2026-01-01T00:00:12Z", _counts(80, 20, 15))
    aborted = passes.run(V2, 22, UP, _counts(160, 40, 30))
    assert passes.status["rollout"]["phase"] == "Aborted" and served(aborted) == {"r1": 100}
    stalled = _judged(ANALYSIS)
    stalled.run(V2, 2, UP, _counts(0, 0, 0))
    resumed = stalled.run(V2, 40, UP, _counts(10, 10, 0))
    assert resumed.state.judged is not None and resumed.state.judged.started == stalled.at(40) and resumed.wake == 10


def test_an_interval_with_too_few_answers_is_inconclusive_and_a_restart_starts_the_interval_again() -> None:
    passes = _judged(ANALYSIS)
    passes.run(V2, 2, UP, _counts(0, 0, 0))
    quiet = passes.run(V2, 12, UP, _counts(10, 2, 2))
    assert quiet.state.judged is not None and quiet.state.judged.inconclusive == 1
    # A restarted operator has lost the counts of the interval's start: the interval starts again, counts kept.
    passes.baseline = None
    again = passes.run(V2, 15, UP, _counts(10, 2, 2))
    assert again.state.judged is not None and again.state.judged.started == passes.at(15) and again.wake == 10.0
    assert (again.state.judged.inconclusive, again.state.phase) == (1, "Paused")
    good = passes.run(V2, 25, UP, _counts(90, 22, 2))
    assert good.state.judged is not None and good.state.judged.passed == 1
    promoted = passes.run(V2, 62, UP, _counts(200, 50, 2))  # the pause ends: promoted, the analysis stops
    assert served(promoted) == {"r2": 100, "r1": 0}
    assert passes.status["rollout"]["analysis"]["passedIntervals"] == 2  # the last interval was judged first


def test_analysis_fields_are_checked_and_name_their_field() -> None:
    def refused(analysis_spec: dict[str, Any]) -> str:
        raw = resource(
            variants=[{"name": "stable", "modelUri": "https://m.example.com/m.joblib", "modelSha256": SHA}],
            rollout={"steps": [{"setWeight": 50}], "analysis": analysis_spec},
        )
        with pytest.raises(spec.SpecError) as err:
            spec.parse(raw, default_image="i")
        return str(err.value)

    assert refused({"interval": "10s"}).startswith("spec.rollout.analysis: set at least one of minSuccessRate")
    assert refused({"minSuccessRate": 101}).startswith("spec.rollout.analysis.minSuccessRate: a number from 0 to 100")
    assert refused({"prometheus": {"address": "p:9090", "query": "up", "max": 1}}).startswith(
        "spec.rollout.analysis.prometheus.address:"
    )
    assert refused({"prometheus": {"address": "http://p:9090", "query": "up"}}) == (
        "spec.rollout.analysis.prometheus: set min, max or both"
    )


COMPARED = """mlmodel_router_shadow_compared_requests_total{model="iris",variant="r2",primary="r1"} 30
mlmodel_router_shadow_uncompared_requests_total{model="iris",variant="r2",primary="r1"} 1
mlmodel_router_shadow_compared_rows_total{model="iris",variant="r2",primary="r1"} 40
mlmodel_router_shadow_agreed_rows_total{model="iris",variant="r2",primary="r1"} 30
mlmodel_router_shadow_delta_sum{model="iris",variant="r2",primary="r1"} 4
mlmodel_router_shadow_probability_delta_bucket{model="iris",variant="r2",primary="r1",le="+Inf"} 40
mlmodel_router_shadow_probability_delta_sum{model="iris",variant="r2",primary="r1"} 4
mlmodel_router_shadow_probability_delta_count{model="iris",variant="r2",primary="r1"} 40
mlmodel_router_shadow_compared_requests_total{model="iris",variant="r2",primary="r2"} 5
"""
SHADOW_GATES = spec.Analysis(interval=10, min_requests=20, min_agreement=0.9, max_probability_delta=0.05)


def test_a_shadows_comparisons_parse_into_its_counts_and_its_own_answers_are_left_out() -> None:
    """The copies of r2's own requests (primary r2) compare r2 with itself: they are not counted."""
    counted = analysis.parse(COMPARED)
    assert counted["r2"].compared == analysis.Agreement(30, 1, 40, 30, 4.0, 40)
    assert (counted["r2"].compared.rate, counted["r2"].compared.probability_delta) == (0.75, 0.1)
    later = analysis.parse(COMPARED.replace("} 30\n", "} 60\n").replace("} 40\n", "} 80\n"))
    assert later["r2"].since(counted["r2"]).compared == analysis.Agreement(30, 0, 40, 30, 0.0, 40)
    assert counted["r2"].since(later["r2"]) == counted["r2"]  # counters went back: the router pod restarted


def test_the_agreement_gates_judge_the_copies_compared_and_below_min_requests_nothing() -> None:
    shadow = Tally(compared=analysis.Agreement(30, 0, 40, 30, 4.0, 40))
    failed = analysis.judge(SHADOW_GATES, shadow, Tally())
    assert (failed.result, failed.compared, [m.describe() for m in failed.metrics]) == (
        "Failed",
        30,
        ["agreement 0.75 (threshold >= 0.9 of rows)", "probabilityDelta 0.1 (threshold <= 0.05)"],
    )
    assert failed.status()["compared"] == 30
    good = analysis.judge(SHADOW_GATES, Tally(compared=analysis.Agreement(25, 0, 25, 25, 0.25, 25)), Tally())
    assert good.result == "Passed"
    few = analysis.judge(SHADOW_GATES, Tally(compared=analysis.Agreement(19, 0, 19, 0, 0.0, 0)), Tally())
    assert few.result == "Inconclusive"


SHADOW_ROLLOUT = {
    "steps": [{"shadow": {"percent": 50, "duration": "20s"}}, {"setWeight": 50}, {"pause": {"duration": "10s"}}],
    "analysis": {"interval": "10s", "minRequests": 20, "agreement": {"min": 0.9, "tolerance": {"absolute": 0.5}}},
}


def _shadowed(compared: int, agreed: int) -> analysis.Snapshot:
    """A router's counts in a shadow step: r1 answered every request, r2 compared as many copies (a row each)."""
    return {
        "router-a": {"r1": Tally(compared), "r2": Tally(compared=analysis.Agreement(compared, 0, compared, agreed))}
    }


def test_a_shadow_step_copies_to_the_new_revision_and_ends_after_its_duration_and_an_agreeing_interval() -> None:
    passes = Passes(SHADOW_ROLLOUT)
    passes.run("https://models.example.com/iris/v1.joblib", 0)
    passes.run(V2, 1)
    shadowing = passes.run(V2, 2, UP, _shadowed(0, 0))
    assert served(shadowing) == {"r1": 100, "r2": 0} and shadowing.wake == 10
    assert shadowing.md.routing.mirror == spec.Mirror("r2", 50, spec.DEFAULT_MIRROR_BUFFER, spec.Tolerance(0.5, 0.0))
    assert passes.messages[-1] == "step 1/3: shadow, 50 % of requests copied to revision 2 for 20 s"
    quiet = passes.run(V2, 12, UP, _shadowed(0, 0))  # nothing compared yet
    assert quiet.state.judged is not None and quiet.state.judged.inconclusive == 1
    waiting = passes.run(V2, 22, UP, _shadowed(10, 10))  # the 20 s are up, but 10 copies of the 20 needed
    assert waiting.state.step == 0 and waiting.md.routing.mirror is not None
    assert passes.messages[-1] == (
        "step 1/3: shadow, 50 % of requests copied to revision 2, until an interval passes the agreement"
    )
    live = passes.run(V2, 32, UP, _shadowed(40, 39))  # 29 of 30 agree: the shadow step ends, the weight moves
    assert served(live) == {"r1": 50, "r2": 50} and live.md.routing.mirror is None
    assert passes.status["rollout"]["analysis"]["lastInterval"] == {
        "result": "Passed",
        "requests": 0,
        "errors": 0,
        "compared": 30,
        "metrics": [{"name": "agreement", "value": 0.967, "threshold": ">= 0.9 of rows", "passed": True}],
    }


def test_a_new_revision_that_disagrees_in_shadow_is_aborted_before_it_gets_a_request() -> None:
    passes = Passes(SHADOW_ROLLOUT)
    passes.run("https://models.example.com/iris/v1.joblib", 0)
    passes.run(V2, 1)
    passes.run(V2, 2, UP, _shadowed(0, 0))
    aborted = passes.run(V2, 12, UP, _shadowed(30, 9))
    assert served(aborted) == {"r1": 100} and aborted.md.routing.mirror is None
    assert (passes.status["rollout"]["phase"], passes.events[-1]) == ("Aborted", "RolloutAborted")
    assert passes.messages[-1] == (
        "revision 2 failed its analysis: agreement 0.3 (threshold >= 0.9 of rows), with 0 5xx of 0 answers and 30"
        " copies compared in the last 10 s (1 failed intervals; failureLimit 0); all traffic is back on revision 1"
    )


@pytest.mark.parametrize(
    ("steps", "gates", "message"),
    [
        ([{"shadow": {"duration": "1m"}}], {"minSuccessRate": 99}, "a shadow step needs agreement or probabilityDelta"),
        (
            [{"setWeight": 10}, {"shadow": {"duration": "1m"}}],
            {"agreement": {"min": 0.9}},
            "before the first setWeight",
        ),
        ([{"shadow": {"duration": "1m"}}], {"agreement": {"min": 1.5}}, "agreement.min: a number from 0 to 1"),
    ],
)
def test_shadow_steps_and_agreement_gates_are_checked(steps: list[Any], gates: dict[str, Any], message: str) -> None:
    raw = resource(
        variants=[{"name": "stable", "modelUri": "https://m.example.com/m.joblib", "modelSha256": SHA}],
        rollout={"steps": steps, "analysis": gates},
    )
    with pytest.raises(spec.SpecError, match=message):
        spec.parse(raw, default_image="i")


PREDICTED = """mlmodel_router_predictions_total{model="iris",variant="r1",class="setosa"} 50
mlmodel_router_predictions_total{model="iris",variant="r1",class="versicolor"} 30
mlmodel_router_predictions_total{model="iris",variant="r1",class="virginica"} 20
mlmodel_router_predictions_total{model="iris",variant="r2",class="setosa"} 10
mlmodel_router_predictions_total{model="iris",variant="r2",class="1.78..3.16"} 5
"""
DRIFT_GATES = spec.Analysis(interval=10, min_requests=10, max_psi=0.2)


def test_each_variants_predicted_classes_parse_and_an_interval_is_their_difference() -> None:
    counted = analysis.parse(PREDICTED)
    assert counted["r1"].predicted == (("setosa", 50), ("versicolor", 30), ("virginica", 20))
    assert counted["r2"].predicted == (("1.78..3.16", 5), ("setosa", 10))
    later = analysis.parse(PREDICTED.replace("} 50\n", "} 80\n").replace("} 10\n", "} 11\n"))
    assert later["r1"].since(counted["r1"]).predicted == (("setosa", 30), ("versicolor", 0), ("virginica", 0))
    assert counted["r2"].since(later["r2"]) == counted["r2"]  # counters went back: the router pod restarted
    merged = counted["r2"] + Tally(predicted=(("setosa", 1), ("virginica", 2)))
    assert merged.predicted == (("1.78..3.16", 5), ("setosa", 11), ("virginica", 2))


def test_psi_is_zero_for_the_same_shares_and_grows_with_the_shift() -> None:
    stable = {"setosa": 500, "versicolor": 300, "virginica": 200}
    assert analysis.psi(stable, stable) == pytest.approx(0)
    assert analysis.psi({"setosa": 50, "versicolor": 30, "virginica": 20}, stable) == pytest.approx(0, abs=1e-3)
    # 10 points moved from setosa to virginica: (0.4-0.5) ln(0.4/0.5) + (0.3-0.2) ln(0.3/0.2) = 0.0629
    shifted = analysis.psi({"setosa": 400, "versicolor": 300, "virginica": 300}, stable)
    assert shifted == pytest.approx(0.0629, abs=1e-3)
    # A class the stable revision never predicted has a finite index (both sides get PSI_FLOOR rows of it).
    new_class = analysis.psi({"setosa": 500, "other": 500}, {"setosa": 1000})
    assert new_class is not None and 2 < new_class < 10
    assert analysis.psi({}, stable) is None and analysis.psi(stable, {}) is None


def test_the_drift_gate_judges_the_canarys_classes_against_the_stables_in_the_same_interval() -> None:
    stable = Tally(100, 0, ((INF, 100),), predicted=(("setosa", 50), ("versicolor", 30), ("virginica", 20)))
    same = analysis.judge(
        DRIFT_GATES, Tally(20, 0, ((INF, 20),), predicted=(("setosa", 10), ("versicolor", 6), ("virginica", 4))), stable
    )
    assert same.result == analysis.PASSED and same.metrics[0].name == "predictionDrift"
    assert same.metrics[0].value is not None and same.metrics[0].value < 0.02, same
    drifted = analysis.judge(DRIFT_GATES, Tally(20, 0, ((INF, 20),), predicted=(("virginica", 20),)), stable)
    assert drifted.result == analysis.FAILED, drifted
    # Shares 0.023, 0.023, 0.953 against 0.498, 0.300, 0.202 (0.5 more rows of each class on both sides).
    assert drifted.failed[0].describe() == "predictionDrift 3.33 (threshold <= 0.2 PSI)"
    few = analysis.judge(DRIFT_GATES, Tally(9, 0, ((INF, 9),), predicted=(("virginica", 9),)), stable)
    assert few.result == analysis.INCONCLUSIVE and few.metrics[0].passed is None
    unanswered = analysis.judge(DRIFT_GATES, Tally(20, 0, ((INF, 20),), predicted=(("virginica", 20),)), Tally())
    assert unanswered.result == analysis.INCONCLUSIVE  # the stable revision predicted nothing to compare with


def test_the_drift_gate_is_parsed_and_checked() -> None:
    raw = resource(
        variants=[{"name": "stable", "modelUri": "https://m.example.com/m.joblib", "modelSha256": SHA}],
        rollout={"steps": [{"setWeight": 50}], "analysis": {"predictionDrift": {"maxPSI": 0.25}}},
    )
    rollout = spec.parse(raw, default_image="i").rollout
    assert rollout is not None and rollout.analysis is not None and rollout.analysis.max_psi == 0.25
    raw["spec"]["rollout"]["analysis"]["predictionDrift"]["maxPSI"] = -1
    with pytest.raises(spec.SpecError, match=r"^spec.rollout.analysis.predictionDrift.maxPSI: a number of at least 0"):
        spec.parse(raw, default_image="i")
