"""The lane: the prediction routes answered before Flask, with Flask's answers.

Flask's ``request_started`` signal tells which of the two answered a request. A Content-Type
with a parameter is Flask's to parse, so the same bytes sent with ``; charset=utf-8`` take
Flask's route: each request below is sent both ways, and the answers must be the same.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from flask import request_started
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from conftest import IRIS_ROWS

JSON = "application/json"
BINARY = "application/octet-stream"
HEADER_LENGTH = "Inference-Header-Content-Length"
COMPARED_HEADERS = ("Content-Type", "X-Model-Name", "X-Model-Variant", HEADER_LENGTH)


@contextmanager
def flask_dispatches(client: FlaskClient) -> Iterator[list[str]]:
    """The paths of the requests that Flask's own routing handled meanwhile."""
    seen: list[str] = []

    def started(sender: Any, **_: Any) -> None:
        from flask import request

        seen.append(request.path)

    with request_started.connected_to(started, client.application):
        yield seen


def _binary(rows: list[list[float]]) -> tuple[bytes, dict[str, str]]:
    raw = np.asarray(rows, dtype="<f8").tobytes()
    tensor = {"name": "x", "shape": [len(rows), len(rows[0])], "datatype": "FP64"}
    header = json.dumps(
        {
            "inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    return header + raw, {HEADER_LENGTH: str(len(header))}


def _v2(rows: list[list[float]]) -> bytes:
    return json.dumps({"inputs": [{"name": "x", "shape": [len(rows), 4], "datatype": "FP64", "data": rows}]}).encode()


def _answers(
    client: FlaskClient, path: str, body: bytes, content_type: str, headers: dict[str, str]
) -> tuple[TestResponse, TestResponse, list[str]]:
    """The answer with ``content_type``, the answer with it plus a charset, and who answered Flask's way."""
    with flask_dispatches(client) as seen:
        lane = client.post(path, data=body, headers={"Content-Type": content_type, **headers})
        flask = client.post(path, data=body, headers={"Content-Type": f"{content_type}; charset=utf-8", **headers})
    return lane, flask, seen


def _same(lane: TestResponse, flask: TestResponse) -> None:
    assert (lane.status_code, lane.data) == (flask.status_code, flask.data)
    for header in COMPARED_HEADERS:
        assert lane.headers.get(header) == flask.headers.get(header), header


GOOD = [
    ("/predict", JSON, json.dumps({"features": IRIS_ROWS}).encode(), {}),
    ("/v1/models/iris:predict", JSON, json.dumps({"instances": IRIS_ROWS}).encode(), {}),
    ("/v2/models/iris/infer", JSON, _v2(IRIS_ROWS), {}),
    ("/v2/models/iris/versions/{version}/infer", JSON, _v2(IRIS_ROWS), {}),
    ("/v2/models/iris/infer", BINARY, *_binary(IRIS_ROWS)),
]


@pytest.mark.parametrize(("path", "content_type", "body", "headers"), GOOD)
def test_a_good_prediction_is_the_lanes_and_flasks_answer_is_the_same(
    make_client: Callable[..., FlaskClient], path: str, content_type: str, body: bytes, headers: dict[str, str]
) -> None:
    client = make_client("iris")
    path = path.format(version=client.get("/v2/models/iris").get_json()["versions"][0])
    lane, flask, seen = _answers(client, path, body, content_type, headers)
    assert lane.status_code == 200, lane.get_data(as_text=True)
    _same(lane, flask)
    assert seen == [path], "the first request is the lane's, the second Flask's"


BAD = [
    ("/predict", b'{"features": [[1, 2, 3]]}', 400),  # iris has 4 features
    ("/predict", b'{"features": [[1, 2, 3, 4]]', 400),  # malformed JSON
    ("/predict", b"", 400),
    ("/predict", b'{"rows": [[1, 2, 3, 4]]}', 400),
    ("/v1/models/iris:predict", b'{"instances": [[1, "x", 3, 4]]}', 400),
    ("/v2/models/iris/infer", b'{"inputs": []}', 400),
    ("/v2/models/iris/versions/0000/infer", _v2(IRIS_ROWS), 404),
]


@pytest.mark.parametrize(("path", "body", "status"), BAD)
def test_a_bad_request_is_answered_by_flasks_route_from_the_bytes_the_lane_read(
    make_client: Callable[..., FlaskClient], path: str, body: bytes, status: int
) -> None:
    client = make_client("iris")
    lane, flask, seen = _answers(client, path, body, JSON, {})
    assert lane.status_code == status, lane.get_data(as_text=True)
    _same(lane, flask)
    assert seen == [path, path], "both requests end in Flask's error handling"


def test_a_body_over_the_limit_or_without_a_length_is_flasks(make_client: Callable[..., FlaskClient]) -> None:
    client = make_client("iris", max_body_bytes=100)
    body = json.dumps({"features": IRIS_ROWS * 3}).encode()
    with flask_dispatches(client) as seen:
        too_large = client.post("/predict", data=body, content_type=JSON)
        small = json.dumps({"features": IRIS_ROWS[:1]}).encode()
        chunked = client.post(  # as gunicorn passes a chunked body: no length, the input terminated
            "/predict",
            input_stream=io.BytesIO(small),
            content_type=JSON,
            environ_overrides={"CONTENT_LENGTH": "", "wsgi.input_terminated": True},
        )
    assert too_large.status_code == 413 and too_large.get_json()["error"]["code"] == "payload_too_large"
    assert chunked.status_code == 200, chunked.get_data(as_text=True)
    assert seen == ["/predict", "/predict"]


def test_api_keys_are_checked_before_the_lane(make_client: Callable[..., FlaskClient]) -> None:
    client = make_client("iris", api_keys=(b"k1",))
    body = {"features": IRIS_ROWS}
    with flask_dispatches(client) as seen:
        ok = client.post("/predict", json=body, headers={"Authorization": "Bearer k1"})
        refused = client.post("/predict", json=body, headers={"X-API-Key": "nope"})
    assert ok.status_code == 200 and refused.status_code == 401
    assert seen == ["/predict"], "only the refused request reaches Flask's hook"


def test_a_loading_model_is_flasks_to_wait_for(make_client: Callable[..., FlaskClient]) -> None:
    client = make_client(None)
    client.application.extensions["mlmodel"].load_wait_s = 0.01
    with flask_dispatches(client) as seen:
        reply = client.post("/predict", json={"features": IRIS_ROWS})
    assert reply.status_code == 503 and seen == ["/predict"]


def test_lane_answers_are_counted_and_logged_under_their_route(
    make_client: Callable[..., FlaskClient], caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client("iris")
    version = client.get("/v2/models/iris").get_json()["versions"][0]
    path = f"/v2/models/iris/versions/{version}/infer"
    caplog.set_level(logging.INFO, logger="mlmodel_server.access")
    with flask_dispatches(client) as seen:
        reply = client.post(path, data=_v2(IRIS_ROWS), content_type=JSON, headers={"X-Request-Id": "lane-1"})
    assert reply.status_code == 200 and seen == [] and reply.headers["X-Request-Id"] == "lane-1"
    metrics = client.get("/metrics").get_data(as_text=True)
    label = 'endpoint="/v2/models/<name>/versions/<version>/infer",status="200",variant="blue"'
    assert f"mlmodel_requests_total{{{label}}} 1.0" in metrics
    fields = [getattr(record, "fields", {}) for record in caplog.records]
    access = [f for f in fields if f.get("request_id") == "lane-1"]
    assert [(a["method"], a["path"], a["status"]) for a in access] == [("POST", path, 200)]
