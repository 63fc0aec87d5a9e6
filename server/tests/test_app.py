"""Every endpoint and every kind of bad input, through the Flask test client."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from mlmodel_server.model import LoadedModel

from conftest import IRIS_ROWS, rows_for

Client = Any


def _post(client: Client, path: str, body: Any = None, **kw: Any) -> Any:
    if body is not None:
        kw["json"] = body
    return client.post(path, **kw)


def _error(response: Any, status: int, code: str, *words: str) -> None:
    """An error in the shape of its route: flat (KServe, V2) under /, /v1 and /v2, else nested."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    if response.request.path.split("/")[1] in {"", "v1", "v2"}:
        assert isinstance(body["error"], str) and body["code"] == code
        message = body["error"]
    else:
        assert body["error"]["code"] == code
        message = body["error"]["message"]
    for word in words:
        assert word in message
    assert "Traceback" not in response.get_data(as_text=True)


def test_predict_equals_the_estimator(make_client: Callable[..., Client], loaded: Callable[[str], LoadedModel]) -> None:
    estimator = loaded("iris").estimator
    response = _post(make_client(), "/predict", {"features": IRIS_ROWS})
    assert response.status_code == 200
    body = response.get_json()
    assert body["predictions"] == estimator.predict(np.array(IRIS_ROWS)).tolist()
    np.testing.assert_allclose(body["probabilities"], estimator.predict_proba(np.array(IRIS_ROWS)))


def test_predict_with_named_rows(make_client: Callable[..., Client]) -> None:
    row = dict(zip(["sepal_length", "sepal_width", "petal_length", "petal_width"], IRIS_ROWS[1], strict=True))
    assert _post(make_client(), "/predict", {"instances": [row]}).get_json()["predictions"] == [2]


def test_regressor_has_no_probabilities(
    make_client: Callable[..., Client], loaded: Callable[[str], LoadedModel]
) -> None:
    x = rows_for("linreg")
    body = _post(make_client("linreg"), "/predict", {"instances": x.tolist()}).get_json()
    assert "probabilities" not in body
    np.testing.assert_allclose(body["predictions"], loaded("linreg").estimator.predict(x))


def test_headers_and_request_id(make_client: Callable[..., Client]) -> None:
    client = make_client()
    response = _post(client, "/predict", {"features": IRIS_ROWS}, headers={"X-Request-Id": "abc-123"})
    assert response.headers["X-Request-Id"] == "abc-123"
    assert response.headers["X-Model-Name"] == "iris"
    assert response.headers["X-Model-Variant"] == "blue"
    generated = client.get("/nope")
    assert len(generated.headers["X-Request-Id"]) == 32
    assert generated.headers["X-Model-Variant"] == "blue"


def test_v1(make_client: Callable[..., Client]) -> None:
    client = make_client()
    response = _post(client, "/v1/models/iris:predict", {"instances": IRIS_ROWS})
    assert response.get_json() == {"predictions": [0, 2, 1]}
    assert _post(client, "/v1/models/iris:predict", {"inputs": IRIS_ROWS}).get_json() == {"predictions": [0, 2, 1]}
    assert client.get("/v1/models/iris").get_json() == {"name": "iris", "ready": True}
    assert client.get("/v1/models").get_json() == {"models": ["iris"]}
    assert client.get("/").get_json() == {"status": "alive"}
    _error(_post(client, "/v1/models/other:predict", {"instances": IRIS_ROWS}), 404, "model_not_found", "'other'")
    _error(client.get("/v1/models/other"), 404, "model_not_found")


def test_v2(make_client: Callable[..., Client]) -> None:
    client = make_client()
    request = {
        "id": "q1",
        "inputs": [{"name": "input-0", "shape": [3, 4], "datatype": "FP32", "data": IRIS_ROWS}],
        "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
    }
    body = _post(client, "/v2/models/iris/infer", request).get_json()
    assert body["model_name"] == "iris" and body["id"] == "q1"
    assert body["outputs"][0] == {"name": "predict", "shape": [3], "datatype": "INT64", "data": [0, 2, 1]}
    assert body["outputs"][1]["shape"] == [3, 3]
    meta = client.get("/v2/models/iris").get_json()
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    assert [o["name"] for o in meta["outputs"]] == ["predict", "predict_proba"]
    assert client.get("/v2/models/iris/ready").get_json() == {"name": "iris", "ready": True}
    assert client.get("/v2/health/live").get_json() == {"live": True}
    assert client.get("/v2/health/ready").get_json() == {"ready": True}
    server = client.get("/v2").get_json()
    assert server["name"] == "mlmodel-server" and server["extensions"] == ["binary_tensor_data"]
    _error(_post(client, "/v2/models/nope/infer", request), 404, "model_not_found", "'nope'", "'iris'")
    unnamed = _post(client, "/v2/models/iris/infer", {"inputs": request["inputs"]}).get_json()
    assert [o["name"] for o in unnamed["outputs"]] == ["predict", "predict_proba"]
    _error(
        _post(client, "/v2/models/iris/infer", {**request, "outputs": [{"name": "proba"}]}),
        400,
        "invalid_payload",
        'unknown output "proba"',
    )


def test_v2_versioned_urls(make_client: Callable[..., Client], loaded: Callable[[str], LoadedModel]) -> None:
    client = make_client()
    version = loaded("iris").sha256[:12]
    assert client.get("/v2/models/iris").get_json()["versions"] == [version]
    base = f"/v2/models/iris/versions/{version}"
    assert client.get(base).get_json()["name"] == "iris"
    assert client.get(base + "/ready").status_code == 200
    inputs = [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": IRIS_ROWS[0]}]
    body = _post(client, base + "/infer", {"inputs": inputs}).get_json()
    assert body["model_version"] == version and body["outputs"][0]["data"] == [0]
    for path in ("/v2/models/iris/versions/1", "/v2/models/iris/versions/1/ready"):
        _error(client.get(path), 404, "model_not_found", "no version '1'", version)
    _error(_post(client, "/v2/models/iris/versions/1/infer", {"inputs": inputs}), 404, "model_not_found")


def test_v2_binary_request_and_response(make_client: Callable[..., Client]) -> None:
    x = np.array(IRIS_ROWS, dtype="<f4")
    tensor = {"name": "x", "shape": [3, 4], "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}}
    header = orjson.dumps({"inputs": [tensor], "outputs": [{"name": "predict", "parameters": {"binary_data": True}}]})
    response = make_client().post(
        "/v2/models/iris/infer",
        data=header + x.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/octet-stream"
    length = int(response.headers["Inference-Header-Content-Length"])
    body = response.get_data()
    output = orjson.loads(body[:length])["outputs"][0]
    assert output["parameters"] == {"binary_data_size": 24} and "data" not in output
    assert np.frombuffer(body[length:], "<i8").tolist() == [0, 2, 1]


def test_v2_null_where_the_model_accepts_missing_values(make_client: Callable[..., Client]) -> None:
    row: list[Any] = [1.0] * 6
    row[2] = None
    request = {"inputs": [{"name": "x", "shape": [1, 6], "datatype": "FP64", "data": row}]}
    assert _post(make_client("hgb"), "/v2/models/hgb/infer", request).status_code == 200
    _error(_post(make_client("logreg"), "/v2/models/logreg/infer", request), 400, "missing_value", 'input "x"')


def test_error_shapes_follow_the_protocol(make_client: Callable[..., Client]) -> None:
    client = make_client()
    short = [[5.1, 3.5, 1.4]]
    v2 = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": short[0]}]}
    for path, body in (("/v2/models/iris/infer", v2), ("/v1/models/iris:predict", {"instances": short})):
        flat = _post(client, path, body).get_json()
        assert flat == {"error": "row 0: expected 4 features, got 3", "code": "wrong_feature_count"}
    nested = _post(client, "/predict", {"features": short}).get_json()
    assert nested == {"error": {"code": "wrong_feature_count", "message": "row 0: expected 4 features, got 3"}}
    assert isinstance(client.get("/v2/nothing").get_json()["error"], str)
    assert isinstance(client.get("/nothing").get_json()["error"], dict)


@pytest.mark.parametrize("path", ["/predict", "/v1/models/iris:predict", "/v2/models/iris/infer"])
@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "application/vnd.api+json"])
def test_a_body_without_a_json_content_type_is_read_as_json(
    make_client: Callable[..., Client], path: str, content_type: str | None
) -> None:
    body: dict[str, Any] = {"instances": IRIS_ROWS}
    if path.startswith("/v2"):
        body = {"inputs": [{"name": "x", "shape": [3, 4], "datatype": "FP64", "data": IRIS_ROWS}]}
    client = make_client()
    response = client.post(path, data=orjson.dumps(body), content_type=content_type)
    assert response.status_code == 200, response.get_data(as_text=True)
    _error(client.post(path, data="{oops", content_type=content_type), 400, "malformed_json")


@pytest.mark.parametrize("path", ["/predict", "/v1/models/iris:predict"])
def test_binary_is_only_for_v2(make_client: Callable[..., Client], path: str) -> None:
    response = make_client().post(path, data=b"{}", content_type="application/octet-stream")
    _error(response, 415, "unsupported_media_type", "application/octet-stream")


def test_health_and_model_info(make_client: Callable[..., Client]) -> None:
    client = make_client()
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    info = client.get("/model-info").get_json()
    assert info["name"] == "iris" and info["variant"] == "blue"
    assert info["feature_names_in"] == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert set(info["sklearn_version"]) == {"saved", "runtime", "mismatch"}


def test_not_ready_until_a_model_is_set(
    make_client: Callable[..., Client], loaded: Callable[[str], LoadedModel]
) -> None:
    client = make_client(model=None)
    client.application.extensions["mlmodel"].load_wait_s = 0.05
    assert client.get("/healthz").status_code == 200
    assert client.get("/v2/health/live").status_code == 200
    for path in ("/readyz", "/v2/health/ready", "/model-info"):
        _error(client.get(path), 503, "not_ready", "loading")
    _error(_post(client, "/predict", {"features": IRIS_ROWS}), 503, "not_ready")
    client.application.extensions["mlmodel"].set_model(loaded("logreg"))
    assert client.get("/readyz").status_code == 200


def test_a_request_to_a_worker_still_loading_waits_for_its_model(
    make_client: Callable[..., Client], loaded: Callable[[str], LoadedModel]
) -> None:
    client = make_client(model=None)
    state = client.application.extensions["mlmodel"]
    model, x = loaded("logreg"), rows_for("logreg")
    threading.Timer(0.2, state.set_model, args=(model,)).start()
    _error(client.get("/readyz"), 503, "not_ready", "loading")
    reply = _post(client, "/predict", {"features": x.tolist()})
    assert reply.status_code == 200, reply.get_json()
    assert reply.get_json()["predictions"] == model.estimator.predict(x).tolist()


@pytest.mark.parametrize(
    ("kwargs", "status", "code", "words"),
    [
        ({"data": "{oops", "content_type": "application/json"}, 400, "malformed_json", ["not valid JSON"]),
        ({"data": "", "content_type": "application/json"}, 400, "malformed_json", ["empty"]),
        (
            {"data": '{"features": [[1,2,3,4]]}', "content_type": "text/plain"},
            415,
            "unsupported_media_type",
            ["application/json", "text/plain"],
        ),
        ({"json": {"features": []}}, 400, "empty_batch", ["no rows"]),
        ({"json": {"features": [[1, 2, 3, 4]] * 11}}, 400, "batch_too_large", ["11 rows", "limit is 10"]),
        (
            {"json": {"features": [[1, 2, 3, 4], [1, 2, 3]]}},
            400,
            "wrong_feature_count",
            ["row 1", "expected 4", "got 3"],
        ),
        ({"json": {"features": [[1, 2, "x", 4]]}}, 400, "non_numeric_value", ["row 0", "petal_length"]),
        ({"json": {"features": {"a": {"b": [1]}}}}, 400, "invalid_payload", ["list of rows"]),
        ({"json": {"features": [[1, 2, [3], 4]]}}, 400, "invalid_payload", ["row 0", "feature 2"]),
        ({"json": [1, 2]}, 400, "invalid_payload", ["JSON object"]),
        (
            {"data": '{"features": [[1, 2, 3, 1e999]]}', "content_type": "application/json"},
            400,
            "non_numeric_value",
            ["row 0", "out of range"],
        ),
        (
            {"data": '{"features": [[1, 2, 3, 1e999]], "x": "y"}', "content_type": "application/json"},
            400,
            "malformed_json",
            ["infinity", "column 25"],
        ),
        ({"json": {"features": [[1, 2, 3, 4], [1, 2, 3]]}}, 400, "wrong_feature_count", ["row 1", "expected 4"]),
        ({"json": {"instances": [{"sepal_length": 1}]}}, 400, "invalid_feature_names", ["missing feature(s)"]),
    ],
)
def test_bad_requests_get_a_4xx_that_names_the_problem(
    make_client: Callable[..., Client], kwargs: dict[str, Any], status: int, code: str, words: list[str]
) -> None:
    response = make_client(max_batch_size=10).post("/predict", **kwargs)
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == code
    for word in words:
        assert word in error["message"]


def test_null_where_the_model_refuses_missing_values(make_client: Callable[..., Client]) -> None:
    row: list[Any] = [1.0] * 6
    row[2] = None
    _error(_post(make_client("logreg"), "/predict", {"features": [row]}), 400, "missing_value", "row 0", "feature 2")
    assert _post(make_client("hgb"), "/predict", {"features": [row]}).status_code == 200


def test_body_over_the_limit(make_client: Callable[..., Client]) -> None:
    body = '{"features": [' + ",".join(["[1,2,3,4]"] * 100) + "]}"
    response = make_client(max_body_bytes=100).post("/predict", data=body, content_type="application/json")
    _error(response, 413, "payload_too_large", "100 bytes", "--max-body-bytes")


def test_wrong_method_and_unknown_route(make_client: Callable[..., Client]) -> None:
    client = make_client()
    response = client.get("/predict")
    _error(response, 405, "method_not_allowed", "GET", "POST")
    assert "POST" in response.headers["Allow"]
    _error(client.delete("/v2/models/iris/infer"), 405, "method_not_allowed")
    _error(client.get("/nothing/here"), 404, "not_found", "/nothing/here")


def test_a_genuine_fault_is_a_500_without_traceback(
    make_client: Callable[..., Client], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client()
    model = client.application.extensions["mlmodel"].model

    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(model, "predict", explode)
    response = _post(client, "/predict", {"features": IRIS_ROWS}, headers={"X-Request-Id": "req-500"})
    _error(response, 500, "internal_error", "req-500")
    assert "disk on fire" not in response.get_data(as_text=True)
    assert any(getattr(r, "fields", {}).get("request_id") == "req-500" for r in caplog.records)


def test_debug_mode_cannot_be_switched_on(make_client: Callable[..., Client], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASK_DEBUG", "1")
    app = make_client().application
    assert app.debug is False
    with pytest.raises(RuntimeError, match="never runs in Flask debug mode"):
        app.debug = True
    app.config["DEBUG"] = True
    assert app.debug is False


def test_api_keys(make_client: Callable[..., Client], tmp_path: Path) -> None:
    client = make_client(api_keys=(b"k1", b"second-key"))
    _error(_post(client, "/predict", {"features": IRIS_ROWS}), 401, "unauthorized", "Authorization: Bearer")
    _error(_post(client, "/predict", {"features": IRIS_ROWS}, headers={"X-API-Key": "nope"}), 401, "unauthorized")
    assert _post(client, "/predict", {"features": IRIS_ROWS}, headers={"X-API-Key": "k1"}).status_code == 200
    ok = _post(client, "/predict", {"features": IRIS_ROWS}, headers={"Authorization": "Bearer second-key"})
    assert ok.status_code == 200
    _error(client.get("/model-info"), 401, "unauthorized")
    for path in ("/", "/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"):
        assert client.get(path).status_code == 200, path


def test_metrics(make_client: Callable[..., Client]) -> None:
    client = make_client()
    _post(client, "/predict", {"features": IRIS_ROWS})
    _post(client, "/predict", {"features": []})
    text = client.get("/metrics").get_data(as_text=True)
    assert 'mlmodel_requests_total{endpoint="/predict",status="200",variant="blue"} 1.0' in text
    assert 'mlmodel_requests_total{endpoint="/predict",status="400",variant="blue"} 1.0' in text
    assert 'mlmodel_rows_predicted_total{variant="blue"} 3.0' in text
    assert "mlmodel_request_duration_seconds_bucket" in text
    assert 'mlmodel_model_info{name="iris"' in text
    assert "mlmodel_model_load_seconds" in text
