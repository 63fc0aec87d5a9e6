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
from mlmodel_operator import analysis, names, spec
from sklearn.datasets import load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression
from test_render import parsed
from test_router_nginx import _nginx, _refused, _Variant, serving

SERVER, FAKE = "127.0.0.20", "127.0.0.21"  # addresses no other test uses
REGRESSOR, OFFSET, DOUBLED = "127.0.0.22", "127.0.0.23", "127.0.0.24"
VARIANTS = [
    {"name": "stable", "modelUri": "file:///m/v1.joblib", "weight": 100},
    {"name": "other", "modelUri": "file:///m/v2.joblib", "weight": 0},
    {"name": "shadow", "modelUri": "file:///m/v3.joblib", "weight": 0},
]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]  # setosa, virginica, versicolor


@contextlib.contextmanager
def _serving_model(address: str, estimator: object, directory: Path) -> Iterator[str]:
    """A real ``mlmodel-server`` of ``estimator`` (named iris) on ``address``, the variants' Service port."""
    assert _refused(address, names.SERVICE_PORT)
    path = directory / f"{address}.joblib"
    joblib.dump(estimator, path)
    command = [sys.executable, "-m", "mlmodel_server", "--host", address, "--port", str(names.SERVICE_PORT)]
    command += ["--model-uri", str(path), "--allow-unpinned", "--model-name", "iris", "--workers", "1"]
    log = path.with_suffix(".log")
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://{address}/v2/health/ready", timeout=2).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        yield address
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real server of an iris logistic regression on ``SERVER``."""
    iris = load_iris()
    model = LogisticRegression(max_iter=500).fit(iris.data, iris.target)
    with _serving_model(SERVER, model, tmp_path_factory.mktemp("model")) as address:
        yield address


@contextlib.contextmanager
def _router(
    tmp_path: Path, limit: str = "10Mi", upstreams: dict[str, str] | None = None, **mirror: object
) -> Iterator[tuple[http.client.HTTPConnection, str]]:
    """stable and the shadow on the real server, ``other`` a fake that answers label 0 to anything (or
    ``upstreams``' addresses); requests up to ``limit`` (``maxRequestSize``); ``mirror``'s other fields."""
    routing = {"allowOverride": True, "mirror": {"variant": "shadow", **mirror}}
    md = parsed(variants=VARIANTS, routing=routing, maxRequestSize=limit)
    addresses = {"stable": SERVER, "other": FAKE, "shadow": SERVER, **(upstreams or {})}
    with serving(FAKE, _Variant), _nginx(tmp_path, md, addresses) as (base, metrics):
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


def test_with_compare_off_the_copies_go_alone_and_nothing_is_compared(model_server: str, tmp_path: Path) -> None:
    """``compare: false`` (a load test of the shadow): it answers every copy (counted 2xx), but the router keeps
    and sends no primary answer, so no comparison is counted, made or not."""
    copies = 'mlmodel_router_mirrored_requests_total{model="iris",variant="shadow",status_class="2xx"} 3'
    with _router(tmp_path, compare=False) as (connection, metrics):
        for row in ROWS:
            _post(connection, "/predict", orjson.dumps({"instances": [row]}))
        deadline = time.monotonic() + 20
        while True:
            with urllib.request.urlopen(metrics, timeout=5) as r:
                text = r.read().decode()
            if copies in text or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert copies in text, text
    assert analysis.comparisons(text) == {}, text


def _worker_rss(tmp_path: Path) -> int:
    """The resident memory of the router's nginx worker, in bytes (its master's pid is in ``tmp_path``)."""
    master = (tmp_path / "nginx.pid").read_text().strip()
    worker = Path(f"/proc/{master}/task/{master}/children").read_text().split()[0]
    status = Path(f"/proc/{worker}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) * 1024


def test_a_50_mib_request_is_answered_and_its_copy_skipped_within_the_routers_memory(tmp_path: Path) -> None:
    """maxRequestSize 64Mi, the mirror's default budget (4 MiB a worker): the client gets ``other``'s answer, the
    copy is counted skipped (``mirrored``, and no comparison), and the worker's memory grows by less than the
    budget (nginx keeps a big body in a file; the router reads its size, not its bytes)."""
    body = b'{"instances": [[5.1, 3.5, 1.4, 0.2]], "pad": "' + b"x" * (50 << 20) + b'"}'
    with _router(tmp_path, limit="64Mi") as (connection, metrics):
        # A small request first: what a worker sets up once (its Lua, its pools, a copy's timer) is not the big one's.
        assert _post(
            connection, "/predict", b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}', **{names.HEADER_VARIANT: "other"}
        )
        before = _worker_rss(tmp_path)
        answer = _post(connection, "/predict", body, **{names.HEADER_VARIANT: "other"})
        after = _worker_rss(tmp_path)
        with urllib.request.urlopen(metrics, timeout=5) as r:
            text = r.read().decode()
    assert answer == b'{"predictions":[0]}'
    assert 'mlmodel_router_mirrored_requests_total{model="iris",variant="shadow",status_class="skipped"} 1' in text
    # The big request's copy was skipped (above), so at most the small one's was compared, if it is back yet.
    assert sum(a.requests + a.uncompared for a in analysis.comparisons(text).values()) <= 1, text
    assert after - before < spec.DEFAULT_MIRROR_BUFFER, (before, after)
    print(f"router worker RSS {before / 2**20:.1f} MiB before a 50 MiB request, {after / 2**20:.1f} MiB after")


def test_a_regressor_agrees_within_the_specs_tolerance_and_one_that_doubles_its_output_does_not(
    tmp_path: Path,
) -> None:
    """Petal width from the other three features. The shadow compares itself with stable, the same regression
    fitted 0.03 higher, and with ``other``, fitted on twice the target: routing.mirror.tolerance (0.05 absolute and
    5 %) reaches the shadow's server, so stable's rows agree (none would, exactly) and the doubled ones do not."""
    iris = load_iris()
    x, y = iris.data[:, :3], iris.data[:, 3]
    rows = orjson.dumps({"instances": x[::15].tolist()})  # 10 rows
    regressors = {"stable": OFFSET, "other": DOUBLED, "shadow": REGRESSOR}
    with (
        _serving_model(REGRESSOR, LinearRegression().fit(x, y), tmp_path),
        _serving_model(OFFSET, LinearRegression().fit(x, y + 0.03), tmp_path),
        _serving_model(DOUBLED, LinearRegression().fit(x, 2 * y), tmp_path),
        _router(tmp_path, tolerance={"absolute": 0.05, "relative": 0.05}, upstreams=regressors) as (
            connection,
            metrics,
        ),
    ):
        _post(connection, "/predict", rows)
        _post(connection, "/predict", rows, **{names.HEADER_VARIANT: "other"})
        found = _compared(metrics, 2)
    offset, doubled = found[("shadow", "stable")], found[("shadow", "other")]
    assert (offset.rows, offset.agreed, doubled.rows, doubled.agreed) == (10, 10, 10, 0), found
    assert offset.delta == pytest.approx(0.3) and doubled.delta / doubled.rows > 0.5, found
