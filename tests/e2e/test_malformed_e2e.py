"""Bad input from outside (issue 11): requests fuzzed through the router are all answered below 500,
and no server worker restarts. (ModelDeployments that break the CRD: operator/tests/integration/
test_schema_refusals.py.)"""

from __future__ import annotations

import http.client
import json
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlmodel_operator import names
from mlmodel_testing.cluster import Cluster
from mlmodel_testing.models import V1, deploy_model_store, digests, md, variant
from mlmodel_testing.pods import restarts
from mlmodel_testing.status import wait_settled

SLOW = list(HealthCheck)  # each example is a round trip to the cluster
FUZZED = 1000


PATHS = ["/predict", "/v1/models/iris:predict", "/v2/models/iris/infer", "/v2/models/iris/versions/x/infer"]
CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "application/octet-stream",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "",
]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["NaN", "Infinity", "-Infinity", "1e309"])
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=25,
)
rows = st.lists(st.lists(scalars | st.floats(-10, 10), min_size=0, max_size=6), max_size=4)
tensor = st.fixed_dictionaries(
    {"name": st.sampled_from(["input-0", "sepal_length", ""]) | values, "shape": values, "datatype": values},
    optional={"data": rows | values, "parameters": values},
)
bodies = st.one_of(
    st.fixed_dictionaries({"instances": rows | values}, optional={"parameters": values}),
    st.fixed_dictionaries({"inputs": st.lists(tensor, max_size=3) | values}, optional={"outputs": values}),
    values,
)


def _encode(body: Any) -> bytes:
    return json.dumps(body, allow_nan=True).encode()  # NaN and Infinity as the bare words JavaScript writes


def send(base: str, method: str, path: str, body: bytes, headers: dict[str, str], chunked: bool = False) -> int:
    """One request on a new connection: its status (0: no response)."""
    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname or "", url.port or 80, timeout=60)
    try:
        if chunked:
            halves = iter([body[: len(body) // 2], body[len(body) // 2 :]])
            conn.request(method, path, halves, headers, encode_chunked=True)
        else:
            conn.request(method, path, body, headers)
        reply = conn.getresponse()
        reply.read()
        return reply.status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        conn.close()


def edge_cases() -> list[tuple[str, str, bytes, dict[str, str], bool]]:
    """Oversized and chunked bodies, NaN and infinity, 10^6 features, deep nesting, bad UTF-8, wrong types."""
    json_type = {"Content-Type": "application/json"}
    row = [5.1, 3.5, 1.4, 0.2]
    deep = "[" * 100_000 + "]" * 100_000
    return [
        ("POST", "/predict", b'{"instances": [' + b"[1,2,3,4]," * 1_200_000 + b"[1,2,3,4]]}", json_type, False),
        ("POST", "/predict", _encode({"instances": [row] * 50}), json_type, True),
        ("POST", "/v2/models/iris/infer", b'{"inputs": [' + b"1," * 200_000, json_type, True),
        ("POST", "/predict", b'{"instances": [[NaN, Infinity, -Infinity, 1e999]]}', json_type, False),
        ("POST", "/v1/models/iris:predict", _encode({"instances": [[float("nan")] * 4]}), json_type, False),
        ("POST", "/predict", _encode({"instances": [[0.5] * 1_000_000]}), json_type, False),
        ("POST", "/v2/models/iris/infer", _encode(_v2([0.5] * 1_000_000, [1, 1_000_000])), json_type, False),
        ("POST", "/predict", ('{"instances": ' + deep + "}").encode(), json_type, False),
        ("POST", "/v2/models/iris/infer", ('{"inputs": ' + deep + "}").encode(), json_type, False),
        ("POST", "/predict", b'{"instances": [[5.1, 3.5, 1.4, 0.2]], "x": "\xff\xfe\xc0\xaf"}', json_type, False),
        ("POST", "/predict", b"\xff\xfe" + _encode({"instances": [row]}), json_type, False),
        ("POST", "/predict", _encode({"instances": [row]}), {"Content-Type": "application/xml"}, False),
        ("POST", "/predict", b"instances=1", {"Content-Type": "application/x-www-form-urlencoded"}, False),
        ("POST", "/v2/models/iris/infer", _encode({"instances": [row]}), {"Content-Type": "text/plain"}, False),
        ("POST", "/predict", b"", json_type, False),
        ("GET", "/predict", b"", {}, False),
        ("PUT", "/v2/models/iris/infer", _encode(_v2(row, [1, 4])), json_type, False),
        ("POST", "/v2/models/../../etc/passwd/infer", b"{}", json_type, False),
        ("POST", "/v2/models/" + "a" * 4000 + "/infer", b"{}", json_type, False),
    ]


def _v2(data: list[float], shape: list[int]) -> dict[str, Any]:
    return {"inputs": [{"name": "input-0", "shape": shape, "datatype": "FP64", "data": data}]}


def booted_workers(cluster: Cluster, namespace: str) -> dict[str, tuple[int, int]]:
    """Per serving pod: its server container's restarts, and the gunicorn workers it booted (its log's
    "Booting worker" lines: a worker that dies is booted again)."""
    selector = f"{names.LABEL_COMPONENT}={names.COMPONENT_PREDICTOR}"
    pods = cluster.get("pods", namespace=namespace, selector=selector)["items"]
    log = {p: cluster.kubectl("-n", namespace, "logs", p, "-c", names.SERVER_CONTAINER).stdout for p in restarts(pods)}
    return {name: (count, log[name].count("Booting worker")) for name, count in restarts(pods).items()}


def test_fuzzed_requests_through_the_router_get_no_5xx_and_restart_no_worker(
    cluster: Cluster, namespace: str, operator: None, models: Path
) -> None:
    """At least 1,000 requests generated with hypothesis (the three protocols' paths, JSON of every
    shape, wrong methods and content types) and the edge cases above, through the router to two
    variants: every answer is below 500, and no server container or gunicorn worker restarts."""
    v1, _ = digests(models)
    deploy_model_store(cluster, namespace, models)
    cluster.apply(md(namespace, [variant("stable", V1, v1, 50), variant("canary", V1, v1, 50)]))
    wait_settled(cluster, namespace)
    before = booted_workers(cluster, namespace)
    assert len(before) == 2 and all(booted >= 1 for _, booted in before.values()), before
    statuses: Counter[int] = Counter()
    with cluster.service_url(namespace, "iris", 80) as base:

        @settings(max_examples=FUZZED, database=None, derandomize=True, deadline=None, suppress_health_check=SLOW)
        @given(
            st.sampled_from(["POST"] * 8 + ["GET", "PUT"]),
            st.sampled_from(PATHS),
            bodies.map(_encode) | st.binary(max_size=64),
            st.sampled_from(CONTENT_TYPES),
        )
        def fuzzed(method: str, path: str, body: bytes, content_type: str) -> None:
            status = send(base, method, path, body, {"Content-Type": content_type} if content_type else {})
            statuses[status] += 1
            assert 0 < status < 500, f"{method} {path} {content_type!r} {body[:300]!r}: {status}"

        fuzzed()
        for method, path, body, headers, chunked in edge_cases():
            status = send(base, method, path, body, headers, chunked)
            statuses[status] += 1
            assert 0 < status < 500, f"edge case {method} {path[:60]} ({len(body)} bytes, chunked {chunked}): {status}"
    print(f"\nanswers by status: {dict(sorted(statuses.items()))}")
    assert sum(statuses.values()) >= FUZZED + len(edge_cases()), statuses
    assert booted_workers(cluster, namespace) == before
