"""Shadow copies compared with the primary's answers: the rendered router in a real nginx on loopback, a real
``mlmodel-server`` as the shadow, and the comparison counters on the router's /metrics, read by ``analysis``."""

from __future__ import annotations

import contextlib
import http.client
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import joblib
import numpy as np
import orjson
import pytest
from mlmodel_operator import analysis, names
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from test_render import parsed
from test_router_nginx import _nginx, _refused, _Variant, serving

SERVER, FAKE = "127.0.0.20", "127.0.0.21"  # addresses no other test uses
VARIANTS = [
    {"name": "stable", "modelUri": "file:///m/v1.joblib", "weight": 100},
    {"name": "other", "modelUri": "file:///m/v2.joblib", "weight": 0},
    {"name": "shadow", "modelUri": "file:///m/v3.joblib", "weight": 0},
]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]  # setosa, virginica, versicolor


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real server of an iris logistic regression on ``SERVER``, the variants' Service port."""
    assert _refused(SERVER, names.SERVICE_PORT)
    iris = load_iris()
    path = tmp_path_factory.mktemp("model") / "iris.joblib"
    joblib.dump(LogisticRegression(max_iter=500).fit(iris.data, iris.target), path)
    command = [sys.executable, "-m", "mlmodel_server", "--host", SERVER, "--port", str(names.SERVICE_PORT)]
    command += ["--model-uri", str(path), "--allow-unpinned", "--model-name", "iris", "--workers", "1"]
    log = path.with_suffix(".log")
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://{SERVER}/v2/health/ready", timeout=2).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        yield SERVER
    finally:
        proc.terminate()
        proc.wait(30)


@contextlib.contextmanager
def _router(tmp_path: Path, **mirror: object) -> Iterator[tuple[http.client.HTTPConnection, str]]:
    """stable and the shadow on the real server, ``other`` a fake that answers label 0 to anything; overridable."""
    md = parsed(variants=VARIANTS, routing={"allowOverride": True, "mirror": {"variant": "shadow", **mirror}})
    upstreams = {"stable": SERVER, "other": FAKE, "shadow": SERVER}
    with serving(FAKE, _Variant), _nginx(tmp_path, md, upstreams) as (base, metrics):
        connection = http.client.HTTPConnection("127.0.0.1", int(base.rsplit(":", 1)[1]), timeout=10)
        yield connection, metrics
        connection.close()


def _post(connection: http.client.HTTPConnection, path: str, body: bytes, **headers: str) -> bytes:
    connection.request("POST", path, body, {"Content-Type": "application/json", **headers})
    reply = connection.getresponse()
    data = reply.read()
    assert reply.status == 200, data
    return data


def _compared(metrics: str, copies: int) -> dict[tuple[str, str], analysis.Agreement]:
    """The comparisons, once ``copies`` copies came back (compared or not)."""
    deadline = time.monotonic() + 20
    while True:
        with urllib.request.urlopen(metrics, timeout=5) as r:
            found = analysis.comparisons(r.read().decode())
        if sum(a.requests + a.uncompared for a in found.values()) >= copies or time.monotonic() > deadline:
            return found


def test_every_copy_is_compared_row_by_row_in_each_protocol(model_server: str, tmp_path: Path) -> None:
    """The shadow is the stable's own server: every row agrees, and the rows counted are the rows sent."""
    v2 = {"inputs": [{"name": "x", "shape": [3, 4], "datatype": "FP64", "data": np.ravel(ROWS).tolist()}]}
    raw = np.asarray(ROWS, dtype="<f8").tobytes()
    binary = {"inputs": [{"name": "x", "shape": [3, 4], "datatype": "FP64", "parameters": {"binary_data_size": 96}}]}
    header = orjson.dumps({**binary, "parameters": {"binary_data_output": True}})
    with _router(tmp_path) as (connection, metrics):
        for row in ROWS:
            _post(connection, "/predict", orjson.dumps({"instances": [row]}))  # 3 copies, 3 rows
        _post(connection, "/predict", orjson.dumps({"instances": ROWS}))  # 3 rows
        _post(connection, "/v1/models/iris:predict", orjson.dumps({"instances": ROWS}))  # 3 rows
        _post(connection, "/v2/models/iris/infer", orjson.dumps(v2))  # 3 rows
        answer = _post(
            connection, "/v2/models/iris/infer", header + raw, **{"Inference-Header-Content-Length": str(len(header))}
        )
        assert b"binary_data_size" in answer  # 3 rows, answered in binary
        found = _compared(metrics, 7)
    agreement = found[("shadow", "stable")]
    assert (agreement.requests, agreement.uncompared, agreement.rows, agreement.agreed) == (7, 0, 15, 15), found
    # /predict and V2 carry probabilities (V1 does not): identical ones.
    assert (agreement.probability_rows, agreement.probability_delta) == (12, 0.0)


def test_a_disagreeing_primary_is_counted_apart_and_a_client_cannot_forge_a_copy(
    model_server: str, tmp_path: Path
) -> None:
    """``other`` answers one row, setosa, whatever it is asked: of the shadow's three rows, the first agrees and
    the two ``other`` lacks do not. A client's own X-Mlmodel-Primary-Length is dropped, so its request is
    answered as any other."""
    with _router(tmp_path) as (connection, metrics):
        _post(connection, "/predict", orjson.dumps({"instances": ROWS}), **{names.HEADER_VARIANT: "other"})
        answer = _post(connection, "/predict", orjson.dumps({"instances": ROWS}), **{"X-Mlmodel-Primary-Length": "5"})
        assert orjson.loads(answer)["predictions"] == [0, 2, 1]
        found = _compared(metrics, 2)
    other = found[("shadow", "other")]
    assert (other.requests, other.rows, other.agreed) == (1, 3, 1), found
    assert other.rate == pytest.approx(1 / 3)
    assert (found[("shadow", "stable")].rows, found[("shadow", "stable")].agreed) == (3, 3)


def test_an_answer_over_the_budget_is_sent_uncompared(model_server: str, tmp_path: Path) -> None:
    """bufferSize 2Ki: a 1-row request fits with its answer, a 40-row one (about 1.3 KiB) fits but its answer
    (about 3 KiB) does not: the copy goes out without it, and is counted uncompared."""
    with _router(tmp_path, bufferSize="2Ki") as (connection, metrics):
        _post(connection, "/predict", orjson.dumps({"instances": ROWS[:1]}))
        _post(connection, "/predict", orjson.dumps({"instances": ROWS * 13 + ROWS[:1]}))
        found = _compared(metrics, 2)
    assert (found[("shadow", "stable")].requests, found[("shadow", "stable")].uncompared) == (1, 1), found
