"""Self-checks for the benchmark: wrk output parsing and target judging.

The samples in ``bench/testdata`` are real ``wrk --latency`` outputs captured
against ``bench/naive_app.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import ModelResults, Point, evaluate_targets
from report import markdown_table
from wrk_output import WrkParseError, WrkResult, lua_post_script, parse_wrk_output

DATA = Path(__file__).resolve().parent / "testdata"


def test_parses_a_clean_run() -> None:
    result = parse_wrk_output((DATA / "wrk_ok.txt").read_text())
    assert result.requests == 153
    assert result.duration_ms == pytest.approx(3040.0)
    assert result.requests_per_sec == pytest.approx(50.33)
    assert result.p50_ms == pytest.approx(305.83)
    assert result.latency_ms[75] == pytest.approx(325.65)
    assert result.latency_ms[90] == pytest.approx(355.46)
    assert result.p99_ms == pytest.approx(416.22)
    assert result.non_2xx == 0
    assert result.socket_errors == {}
    assert result.ok
    assert result.problems() == ""


def test_non_2xx_fails_the_run() -> None:
    result = parse_wrk_output((DATA / "wrk_non2xx.txt").read_text())
    assert result.requests == 688
    assert result.non_2xx == 688
    assert result.requests_per_sec == pytest.approx(341.45)
    assert result.p50_ms == pytest.approx(9.23)
    assert not result.ok
    assert "688 non-2xx" in result.problems()


SOCKET_ERRORS_AND_UNITS = """\
Running 10s test @ http://127.0.0.1:8080/predict
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   812.40us    1.20ms   2.00s    97.12%
    Req/Sec    10.12k     1.10k   12.30k    71.00%
  Latency Distribution
     50%  612.00us
     75%    1.02ms
     90%    1.50ms
     99%    1.20s
  100712 requests in 1.00m, 18.34MB read
  Socket errors: connect 0, read 3, write 0, timeout 7
Requests/sec:  10064.35
Transfer/sec:      1.83MB
"""


def test_units_and_socket_errors() -> None:
    result = parse_wrk_output(SOCKET_ERRORS_AND_UNITS)
    assert result.p50_ms == pytest.approx(0.612)
    assert result.latency_ms[75] == pytest.approx(1.02)
    assert result.p99_ms == pytest.approx(1200.0)
    assert result.duration_ms == pytest.approx(60_000.0)
    assert result.requests_per_sec == pytest.approx(10064.35)
    assert result.socket_errors == {"connect": 0, "read": 3, "write": 0, "timeout": 7}
    assert result.socket_error_total == 10
    assert not result.ok
    assert result.problems() == "3 socket read errors, 7 socket timeout errors"


def test_output_without_latency_is_rejected() -> None:
    text = (DATA / "wrk_ok.txt").read_text()
    without = "\n".join(line for line in text.splitlines() if "%" not in line or "Stdev" in line)
    with pytest.raises(WrkParseError):
        parse_wrk_output(without)
    with pytest.raises(WrkParseError):
        parse_wrk_output("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_lua_script_keeps_the_body_intact() -> None:
    body = '{"features": [[5.1, 3.5, 1.4, 0.2]]}'
    script = lua_post_script(body)
    assert 'wrk.method = "POST"' in script
    assert f"[=[{body}]=]" in script
    tricky = "x]=]y"
    assert f"[==[{tricky}]==]" in lua_post_script(tricky)


def _result(rps: float, p50: float, p99: float) -> WrkResult:
    return WrkResult(
        requests=100,
        duration_ms=1000,
        requests_per_sec=rps,
        latency_ms={50: p50, 99: p99},
    )


def test_targets_come_from_measured_numbers() -> None:
    res = ModelResults("iris")
    res.points["naive"] = {
        1: Point(_result(100, 5.0, 9.0)),
        16: Point(_result(100, 150, 300)),
    }
    res.points["ours"] = {
        1: Point(_result(150, 4.0, 8.0)),
        16: Point(_result(350, 20, 40)),
    }
    marks = {t.what: t.mark for t in evaluate_targets(res, 1000)}
    assert marks == {
        "req/s ours/naive @16 conns": "PASS",
        "ours p99 @16 conns": "PASS",
        "p50 @1 conn: ours <= naive": "PASS",
    }
    res.points["ours"][16] = Point(_result(250, 20, 60))
    res.points["ours"][1] = Point(_result(90, 6.0, 8.0))
    marks = {t.what: t.mark for t in evaluate_targets(res, 1000)}
    assert set(marks.values()) == {"MISS"}


def test_failed_or_missing_runs_are_not_passed() -> None:
    res = ModelResults("logreg")
    bad = WrkResult(
        requests=10,
        duration_ms=1000,
        requests_per_sec=1e6,
        latency_ms={50: 0.1, 99: 0.2},
        non_2xx=3,
    )
    res.points["naive"] = {16: Point(_result(100, 5, 9))}
    res.points["ours"] = {16: Point(bad)}
    res.bulk = {"ours": Point(bad)}
    targets = evaluate_targets(res, 1000)
    # Ours failed: a MISS, never a PASS; the @1 conn target was not run at all: n/a.
    marks = {t.what: t.mark for t in targets}
    assert marks == {
        "req/s ours/naive @16 conns": "MISS",
        "ours p99 @16 conns": "MISS",
        "p50 @1 conn: ours <= naive": "n/a",
        "1000-row request, rows/s": "MISS",
    }
    assert "3 non-2xx" in targets[0].measured
    res.points["naive"] = {16: Point(bad)}
    res.points["ours"] = {16: Point(_result(100, 5, 9))}
    ratio = evaluate_targets(res, 1000)[0]
    assert ratio.mark == "n/a" and ratio.measured == "baseline failed"
    res.bulk = {"ours": Point(_result(250, 3.0, 5.0))}
    bulk = [t for t in evaluate_targets(res, 1000) if "rows/s" in t.what]
    assert bulk[0].mark == "PASS" and bulk[0].measured == "250,000"


def test_markdown_table_is_aligned() -> None:
    table = markdown_table(["a", "bb"], [["x", "1"], ["yyy", "22"]]).splitlines()
    assert len({len(line) for line in table}) == 1
    assert table[1].endswith(":|")


def test_scale_counts_resource_requests_by_verb() -> None:
    from scale import delta, request_counts

    before = request_counts(
        'apiserver_request_total{code="200",component="apiserver",group="apps",resource="deployments",'
        'scope="namespace",subresource="",verb="APPLY",version="v1"} 4\n'
        'apiserver_request_total{code="200",component="",group="",resource="",scope="",subresource="",'
        'verb="GET",version=""} 99\n'  # /metrics and other non-resource URLs: not counted
    )
    after = request_counts(
        'apiserver_request_total{code="200",component="apiserver",group="apps",resource="deployments",'
        'scope="namespace",subresource="",verb="APPLY",version="v1"} 6\n'
        'apiserver_request_total{code="201",component="apiserver",group="mlmodel.io",resource="modeldeployments",'
        'scope="namespace",subresource="status",verb="PATCH",version="v1alpha1"} 1\n'
    )
    assert before == {("APPLY", "deployments"): 4}
    assert delta(after, before) == {"APPLY deployments": 2, "PATCH modeldeployments/status": 1}


def test_scale_counts_only_what_the_operator_can_ask_for() -> None:
    from scale import operators

    seen = {"APPLY deployments": 2.0, "PUT deployments/status": 5.0, "PATCH modeldeployments/status": 1.0}
    seen |= {"POST events": 3.0, "POST replicasets": 4.0, "WATCH pods": 1.0}
    assert operators(seen) == {
        "APPLY deployments": 2.0,
        "PATCH modeldeployments/status": 1.0,
        "POST events": 3.0,
        "WATCH pods": 1.0,
    }
