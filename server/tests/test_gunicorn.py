"""The real thing: ``python -m mlmodel_server`` under gunicorn on a free port.

The server's ``PYTHONPATH`` is this directory (``conftest.start``), so it unpickles ``slowmodel``'s classes.
"""

from __future__ import annotations

import http.client
import json
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import joblib
import numpy as np
import requests
from sklearn.datasets import load_iris
from sklearn.ensemble import BaggingClassifier
from sklearn.tree import DecisionTreeClassifier

from conftest import DEADLINE_S, IRIS_ROWS, IRIS_WORKERS, SavedModel, Server
from slowmodel import SlowClassifier


def test_predictions_equal_the_model_in_this_process(iris_server: Server, models: dict[str, SavedModel]) -> None:
    iris = models["iris"]
    x = np.random.RandomState(3).uniform(0, 8, size=(200, 4))
    body = requests.post(iris_server.url + "/predict", json={"instances": x.tolist()}, timeout=10).json()
    assert body["predictions"] == iris.estimator.predict(x).tolist()
    np.testing.assert_allclose(body["probabilities"], iris.estimator.predict_proba(x))
    v2 = requests.post(
        iris_server.url + "/v2/models/iris/infer",
        json={"inputs": [{"name": "x", "shape": [3, 4], "datatype": "FP64", "data": IRIS_ROWS}]},
        timeout=10,
    ).json()
    assert v2["outputs"][0]["data"] == iris.estimator.predict(np.array(IRIS_ROWS)).tolist()
    lines = [json.loads(line) for line in iris_server.logs().splitlines()]
    access = [line for line in lines if line.get("logger") == "mlmodel_server.access"]
    assert access and {"request_id", "status", "duration_ms", "variant"} <= set(access[-1])


def test_concurrent_requests_are_batched_and_correct(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # A model costly enough a call to batch (a forest is packed, far under batching.COSTLY_CALL_S): 40 bagged trees,
    # which scikit-learn walks one at a time.
    x, y = load_iris(return_X_y=True)
    bagged = BaggingClassifier(DecisionTreeClassifier(max_depth=3), n_estimators=40, random_state=0).fit(x, y)
    joblib.dump(bagged, tmp_path / "bagged.joblib")
    server = serve("--model-uri", str(tmp_path / "bagged.joblib"), "--workers", "1", "--threads", "16")
    rows = np.random.RandomState(4).uniform(0, 8, size=(160, 4))
    expected = bagged.predict(rows).tolist()

    def one(i: int) -> int:
        reply = requests.post(server.url + "/predict", json={"features": [rows[i].tolist()]}, timeout=10)
        return int(reply.json()["predictions"][0])

    with ThreadPoolExecutor(max_workers=16) as pool:
        assert list(pool.map(one, range(len(rows)))) == expected
    metrics = requests.get(server.url + "/metrics", timeout=5).text
    count = next(line for line in metrics.splitlines() if line.startswith("mlmodel_batch_rows_count"))
    assert float(count.split()[-1]) < len(rows), "16 concurrent clients should share model calls"


def _counts(server: Server) -> dict[str, float]:
    """Every series on ``/metrics`` (summed over the workers), by name and labels."""
    text = requests.get(server.url + "/metrics", timeout=5).text
    lines = (line.rpartition(" ") for line in text.splitlines() if line and not line.startswith("#"))
    return {series: float(value) for series, _, value in lines}


def test_metrics_add_up_across_workers(iris_server: Server) -> None:
    requests_ok = 'mlmodel_requests_total{endpoint="/predict",status="200",variant="default"}'
    rows = 'mlmodel_rows_predicted_total{variant="default"}'
    before = _counts(iris_server)  # the shared server's counts from earlier tests
    for _ in range(30):
        requests.post(
            iris_server.url + "/predict", json={"features": IRIS_ROWS}, timeout=10, headers={"Connection": "close"}
        )
    after = _counts(iris_server)
    assert after[requests_ok] - before.get(requests_ok, 0.0) == 30.0
    assert after[rows] - before.get(rows, 0.0) == 90.0
    pids = {json.loads(line).get("pid") for line in iris_server.logs().splitlines()}
    assert iris_server.log.read_text().count("Booting worker") >= IRIS_WORKERS and pids


def test_chunked_body_over_the_limit_is_413(serve, models: dict[str, SavedModel]) -> None:  # type: ignore[no-untyped-def]
    iris = models["iris"]
    server = serve("--model-uri", str(iris.path), "--max-body-bytes", "1000")

    def chunks() -> Iterator[bytes]:
        yield b'{"features": ['
        for _ in range(200):
            yield b"[1,2,3,4],"
        yield b"[1,2,3,4]]}"

    reply = requests.post(
        server.url + "/predict", data=chunks(), headers={"Content-Type": "application/json"}, timeout=10
    )
    assert reply.status_code == 413
    assert reply.json()["error"]["code"] == "payload_too_large"
    small = requests.post(
        server.url + "/predict",
        data=iter([b'{"features": ', b"[[1,2,3,4]]}"]),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert small.status_code == 200
    declared = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    declared.request("POST", "/predict", body=b"x" * 2000, headers={"Content-Type": "application/json"})
    assert declared.getresponse().status == 413


def test_sigterm_drains_in_flight_requests(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "slow.joblib"
    joblib.dump(SlowClassifier(), path)
    marker = tmp_path / "in-predict"
    server = serve("--model-uri", str(path), "--workers", "1", env={"SLOW_MODEL_MARKER": str(marker)})
    result: dict[str, int] = {}

    def slow_request() -> None:
        reply = requests.post(server.url + "/predict", json={"features": [[42, 0]]}, timeout=20)
        result["status"] = reply.status_code

    thread = threading.Thread(target=slow_request)
    thread.start()
    deadline = time.monotonic() + DEADLINE_S
    while not marker.exists():
        assert time.monotonic() < deadline, server.logs()
        time.sleep(0.01)
    server.proc.send_signal(signal.SIGTERM)
    thread.join(20)
    assert result.get("status") == 200, server.logs()
    assert server.proc.wait(20) == 0


def test_load_per_worker(serve, models: dict[str, SavedModel]) -> None:  # type: ignore[no-untyped-def]
    hgb = models["hgb"]
    server = serve("--model-uri", str(hgb.path), "--no-preload", "--workers", "2")
    x = np.random.RandomState(5).normal(size=(10, 6))
    body = requests.post(server.url + "/predict", json={"features": x.tolist()}, timeout=10).json()
    assert body["predictions"] == hgb.estimator.predict(x).tolist()
    assert "model loaded in worker" in server.logs()


def test_model_that_cannot_predict_never_serves(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    broken = SlowClassifier()
    broken.n_features_in_ = "two"  # type: ignore[assignment]
    path = tmp_path / "broken.joblib"
    joblib.dump(broken, path)
    for mode in ("--preload", "--no-preload"):
        server = serve("--model-uri", str(path), mode, ready=False)
        assert server.proc.wait(DEADLINE_S) != 0, server.logs()
