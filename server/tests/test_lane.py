"""The lane: the prediction routes answered before Flask, with Flask's answers.

Flask's ``request_started`` signal tells which of the two answered a request. A body without
a ``Content-Length`` (chunked, as gunicorn passes it) is Flask's to read, so each request below
is sent both ways, with its length and chunked, and the answers must be the same: status line,
body and every header. Good or bad, the lane answers the first itself, and runs the model once.
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

from mlmodel_server.app import create_app
from mlmodel_server.config import Settings
from mlmodel_server.model import LoadedModel

from conftest import IRIS_ROWS

JSON = "application/json"
BINARY = "application/octet-stream"
TEXT = "text/plain"
HEADER_LENGTH = "Inference-Header-Content-Length"


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


def _lane(client: FlaskClient, path: str, body: bytes, headers: dict[str, str]) -> TestResponse:
    """With its length, as gunicorn passes it (the test client leaves it out when the body is empty)."""
    return client.post(path, data=body, headers=headers, environ_overrides={"CONTENT_LENGTH": str(len(body))})


def _chunked(client: FlaskClient, path: str, body: bytes, headers: dict[str, str]) -> TestResponse:
    """As gunicorn passes a chunked body: no length, the input terminated."""
    return client.post(
        path,
        input_stream=io.BytesIO(body),
        headers=headers,
        environ_overrides={"CONTENT_LENGTH": "", "wsgi.input_terminated": True},
    )


def _both_ways(
    client: FlaskClient, path: str, body: bytes, content_type: str | None, headers: dict[str, str]
) -> tuple[TestResponse, TestResponse]:
    """The answer to the request sent with its length, then chunked; the lane answers only the first."""
    headers = {"X-Request-Id": "same-id", **headers}
    if content_type is not None:
        headers["Content-Type"] = content_type
    with flask_dispatches(client) as seen:
        lane = _lane(client, path, body, headers)
        assert seen == [], "the lane answers a request with a Content-Length"
        flask = _chunked(client, path, body, headers)
    assert seen == [path], "Flask answers a chunked one"
    _same(lane, flask)
    return lane, flask


def _same(lane: TestResponse, flask: TestResponse) -> None:
    assert (lane.status, lane.data) == (flask.status, flask.data)
    assert sorted(lane.headers.items()) == sorted(flask.headers.items())


GOOD = [
    ("/predict", JSON, json.dumps({"features": IRIS_ROWS}).encode(), {}),
    ("/predict", f"{JSON}; charset=utf-8", json.dumps({"features": IRIS_ROWS}).encode(), {}),
    ("/predict", None, json.dumps({"features": IRIS_ROWS}).encode(), {}),
    ("/v1/models/iris:predict", JSON, json.dumps({"instances": IRIS_ROWS}).encode(), {}),
    ("/v1/models/iris:predict", "Application/Vnd.API+JSON", json.dumps({"instances": IRIS_ROWS}).encode(), {}),
    ("/v2/models/iris/infer", JSON, _v2(IRIS_ROWS), {}),
    ("/v2/models/iris/infer", f"{JSON};charset=UTF-8", _v2(IRIS_ROWS), {}),
    ("/v2/models/iris/versions/{version}/infer", JSON, _v2(IRIS_ROWS), {}),
    ("/v2/models/iris/infer", BINARY, *_binary(IRIS_ROWS)),
]


@pytest.mark.parametrize(("path", "content_type", "body", "headers"), GOOD)
def test_a_good_prediction_is_the_lanes_and_flasks_answer_is_the_same(
    make_client: Callable[..., FlaskClient], path: str, content_type: str | None, body: bytes, headers: dict[str, str]
) -> None:
    client = make_client("iris")
    path = path.format(version=client.get("/v2/models/iris").get_json()["versions"][0])
    lane, _ = _both_ways(client, path, body, content_type, headers)
    assert lane.status_code == 200, lane.get_data(as_text=True)


BAD = [
    ("/predict", JSON, b'{"features": [[1, 2, 3]]}', 400),  # iris has 4 features
    ("/predict", JSON, b'{"features": [[1, 2, 3, 4]]', 400),  # malformed JSON
    ("/predict", JSON, b"", 400),
    ("/predict", JSON, b'{"rows": [[1, 2, 3, 4]]}', 400),
    ("/predict", TEXT, json.dumps({"features": IRIS_ROWS}).encode(), 415),
    ("/predict", BINARY, json.dumps({"features": IRIS_ROWS}).encode(), 415),
    ("/v1/models/iris:predict", JSON, b'{"instances": [[1, "x", 3, 4]]}', 400),
    ("/v1/models/iris:predict", f"{TEXT}; charset=utf-8", json.dumps({"instances": IRIS_ROWS}).encode(), 415),
    ("/v1/models/iris:predict", JSON, json.dumps({"instances": [IRIS_ROWS[0]] * 11}).encode(), 400),  # 10 at most
    ("/v2/models/iris/infer", JSON, b'{"inputs": []}', 400),
    ("/v2/models/iris/infer", TEXT, _v2(IRIS_ROWS), 415),
    ("/v2/models/iris/versions/0000/infer", JSON, _v2(IRIS_ROWS), 404),
    ("/v2/models/iris/versions/0000/infer", TEXT, _v2(IRIS_ROWS), 404),  # the version is checked first
]


@pytest.mark.parametrize(("path", "content_type", "body", "status"), BAD)
def test_a_bad_request_gets_the_same_error_from_the_lane_as_from_flask(
    make_client: Callable[..., FlaskClient], path: str, content_type: str, body: bytes, status: int
) -> None:
    client = make_client("iris", max_batch_size=10)
    lane, _ = _both_ways(client, path, body, content_type, {})
    assert lane.status_code == status, lane.get_data(as_text=True)


def test_a_bad_binary_header_length_gets_the_same_error(make_client: Callable[..., FlaskClient]) -> None:
    body, _ = _binary(IRIS_ROWS)
    lane, _ = _both_ways(make_client("iris"), "/v2/models/iris/infer", body, BINARY, {HEADER_LENGTH: "x"})
    assert lane.status_code == 400 and HEADER_LENGTH in lane.get_json()["error"]


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "nope"}, {"Authorization": "Bearer k1"}])
def test_api_keys_are_checked_by_the_lane_as_by_flask(
    make_client: Callable[..., FlaskClient], headers: dict[str, str]
) -> None:
    client = make_client("iris", api_keys=(b"k1",))
    lane, _ = _both_ways(client, "/predict", json.dumps({"features": IRIS_ROWS}).encode(), JSON, headers)
    assert lane.status_code == (200 if headers.get("Authorization") else 401)


def test_a_loading_model_is_waited_for_then_503_both_ways(make_client: Callable[..., FlaskClient]) -> None:
    client = make_client(None)
    client.application.extensions["mlmodel"].load_wait_s = 0.01
    lane, _ = _both_ways(client, "/v1/models/model:predict", json.dumps({"instances": IRIS_ROWS}).encode(), JSON, {})
    assert lane.status_code == 503 and lane.get_json()["code"] == "not_ready"


class Faulty:
    """A regressor of 4 features that counts its calls, refuses a negative value as scikit-learn
    refuses an input (``ValueError``), and breaks (``RuntimeError``) on a 13."""

    n_features_in_ = 4

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        if (x < 0).any():
            raise ValueError("negative values are not accepted")
        if (x == 13).any():
            raise RuntimeError("the model broke")
        sums: np.ndarray = x.sum(axis=1)
        return sums


@pytest.fixture
def faulty() -> tuple[FlaskClient, Faulty]:
    """A client serving a ``Faulty`` model called "faulty", its call count at zero."""
    estimator = Faulty()
    model = LoadedModel(estimator, sha256="0" * 64, source="memory", saved_sklearn_version=None, load_seconds=0.0)
    app = create_app(Settings(model_uri="unused", model_name="faulty", variant="blue"), model)
    estimator.calls = 0  # the app timed a few calls to decide on batching
    return app.test_client(), estimator


PROTOCOLS = {
    "/predict": lambda rows: json.dumps({"features": rows}).encode(),
    "/v1/models/faulty:predict": lambda rows: json.dumps({"instances": rows}).encode(),
    "/v2/models/faulty/infer": _v2,
}


@pytest.mark.parametrize("path", PROTOCOLS)
@pytest.mark.parametrize("batching", [True, False], ids=["batching", "direct"])
@pytest.mark.parametrize(("value", "status"), [(-1.0, 400), (13.0, 500)], ids=["rejected", "broken"])
def test_a_failing_prediction_calls_the_model_once(
    faulty: tuple[FlaskClient, Faulty], path: str, batching: bool, value: float, status: int
) -> None:
    client, estimator = faulty
    client.application.extensions["mlmodel"].batcher.direct = not batching
    body = PROTOCOLS[path]([[1.0, 2.0, value, 4.0]])
    headers = {"Content-Type": JSON, "X-Request-Id": "same-id"}
    with flask_dispatches(client) as seen:
        lane = _lane(client, path, body, headers)
        assert (seen, estimator.calls) == ([], 1), "the lane answers, with one call of the model"
        flask = _chunked(client, path, body, headers)
        assert (seen, estimator.calls) == ([path], 2), "Flask answers, with one call of the model"
    assert lane.status_code == status, lane.get_data(as_text=True)
    _same(lane, flask)
    good = _lane(client, path, PROTOCOLS[path]([[1.0, 2.0, 3.0, 4.0]]), headers)
    assert good.status_code == 200 and estimator.calls == 3


def test_a_fault_is_logged_once_with_its_traceback_by_either(
    faulty: tuple[FlaskClient, Faulty], caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = faulty
    caplog.set_level(logging.ERROR, logger="mlmodel_server")
    _both_ways(client, "/predict", json.dumps({"features": [[13, 0, 0, 0]]}).encode(), JSON, {})
    faults = [r for r in caplog.records if r.name == "mlmodel_server"]
    assert [(r.getMessage(), r.fields["request_id"]) for r in faults] == [("unhandled error", "same-id")] * 2  # type: ignore[attr-defined]
    for record in faults:
        assert record.exc_info is not None and "the model broke" in str(record.exc_info[1])


def test_a_body_over_the_limit_or_without_a_length_is_flasks(make_client: Callable[..., FlaskClient]) -> None:
    client = make_client("iris", max_body_bytes=100)
    body = json.dumps({"features": IRIS_ROWS * 3}).encode()
    with flask_dispatches(client) as seen:
        too_large = client.post("/predict", data=body, content_type=JSON)
        chunked = _chunked(client, "/predict", json.dumps({"features": IRIS_ROWS[:1]}).encode(), {})
    assert too_large.status_code == 413 and too_large.get_json()["error"]["code"] == "payload_too_large"
    assert chunked.status_code == 200, chunked.get_data(as_text=True)
    assert seen == ["/predict", "/predict"]


def test_lane_answers_are_counted_and_logged_under_their_route(
    make_client: Callable[..., FlaskClient], caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client("iris")
    version = client.get("/v2/models/iris").get_json()["versions"][0]
    path = f"/v2/models/iris/versions/{version}/infer"
    caplog.set_level(logging.INFO, logger="mlmodel_server.access")
    with flask_dispatches(client) as seen:
        good = client.post(path, data=_v2(IRIS_ROWS), content_type=JSON, headers={"X-Request-Id": "lane-1"})
        bad = client.post(path, data=_v2([]), content_type=JSON, headers={"X-Request-Id": "lane-2"})
    assert (good.status_code, bad.status_code, seen) == (200, 400, [])
    assert good.headers["X-Request-Id"] == "lane-1"
    metrics = client.get("/metrics").get_data(as_text=True)
    for status in ("200", "400"):
        label = f'endpoint="/v2/models/<name>/versions/<version>/infer",status="{status}",variant="blue"'
        assert f"mlmodel_requests_total{{{label}}} 1.0" in metrics
    fields = [getattr(record, "fields", {}) for record in caplog.records]
    access = [(f["request_id"], f["method"], f["path"], f["status"]) for f in fields if f.get("path") == path]
    assert access == [("lane-1", "POST", path, 200), ("lane-2", "POST", path, 400)]
