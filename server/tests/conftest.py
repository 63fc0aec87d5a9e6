"""Small real models, fitted once per session, the real server under gunicorn, and shared helpers."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# One OpenMP/BLAS thread, as the server runs (mlmodel_server.cli), set before numpy and scikit-learn load them: the
# models here are small, and on a busy machine a second thread spins at every barrier for a core it does not get.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import joblib
import numpy as np
import pandas as pd
import pytest
import requests
from sklearn.datasets import load_iris, make_classification
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression

from mlmodel_server.app import create_app
from mlmodel_server.config import Settings
from mlmodel_server.model import LoadedModel, load

IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


@dataclass(frozen=True)
class SavedModel:
    estimator: Any
    path: Path
    sha256: str


def _save(estimator: Any, path: Path) -> SavedModel:
    joblib.dump(estimator, path)
    return SavedModel(estimator, path, hashlib.sha256(path.read_bytes()).hexdigest())


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SavedModel]:
    """iris (named features, forest), logreg (no names), hgb (accepts NaN), linreg (regressor)."""
    import pandas as pd

    out = tmp_path_factory.mktemp("models")
    iris = load_iris()
    frame = pd.DataFrame(iris.data, columns=IRIS_FEATURES)
    x, y = make_classification(n_samples=400, n_features=6, n_informative=4, n_classes=3, random_state=0)
    return {
        "iris": _save(
            RandomForestClassifier(n_estimators=100, max_depth=3, random_state=0).fit(frame, iris.target),
            out / "iris.joblib",
        ),
        "logreg": _save(LogisticRegression(max_iter=500).fit(x, y), out / "logreg.pkl"),
        "hgb": _save(HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(x, y), out / "hgb.joblib"),
        "linreg": _save(LinearRegression().fit(x, x[:, 0] * 2.0), out / "linreg.pickle"),
    }


@pytest.fixture(scope="session")
def loaded(models: dict[str, SavedModel]) -> Callable[[str], LoadedModel]:
    cache: dict[str, LoadedModel] = {}

    def get(name: str) -> LoadedModel:
        if name not in cache:
            saved = models[name]
            cache[name] = load(saved.path, source=str(saved.path), sha256=saved.sha256)
        return cache[name]

    return get


@pytest.fixture
def make_client(loaded: Callable[[str], LoadedModel]) -> Callable[..., Any]:
    """A Flask test client serving one of the session models (or none, with ``model=None``)."""

    def make(model: str | None = "iris", **overrides: Any) -> Any:
        api_keys = overrides.pop("api_keys", None)
        settings = Settings(model_uri="unused", model_name=model or "model", variant="blue", **overrides)
        app = create_app(settings, loaded(model) if model else None, api_keys=api_keys)
        return app.test_client()

    return make


def rows_for(name: str) -> np.ndarray:
    """Deterministic rows of the right width for a session model."""
    width = 4 if name == "iris" else 6
    return np.random.RandomState(1).uniform(0, 7, size=(25, width))


HERE = Path(__file__).parent
# How long a server may take to start or stop: a wait, not a measure. In `make test` the e2e lanes share the two
# cores, and a server's imports alone have taken over 30 s then.
DEADLINE_S = 120.0


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    log_start: int = 0  # where this test's lines begin: a shared server's earlier lines are other tests'

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        """The server's log from ``log_start``."""
        with self.log.open("rb") as log:
            log.seek(self.log_start)
            return log.read().decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Server:
    port = free_port()
    log = tmp_path / f"server-{port}.log"
    full_env = {**os.environ, "PYTHONPATH": str(HERE), "TMPDIR": str(tmp_path), **(env or {})}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlmodel_server", "--host", "127.0.0.1", "--port", str(port), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
        )
    return Server(proc, port, log)


def wait_ready(server: Server, workers: int = 1) -> None:
    """Wait for ``/readyz`` to answer 200 and ``workers`` workers to boot (the first answers before the rest)."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise AssertionError(f"server exited with {server.proc.returncode}:\n{server.logs()}")
        try:
            ready = requests.get(server.url + "/readyz", timeout=1).status_code == 200
            if ready and server.logs().count("Booting worker") >= workers:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"server not ready within {DEADLINE_S}s:\n{server.logs()}")


def stop(server: Server) -> None:
    if server.proc.poll() is None:
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[object]:
    started: list[Server] = []

    def run(*args: str, env: dict[str, str] | None = None, ready: bool = True) -> Server:
        server = start(tmp_path, *args, env=env)
        started.append(server)
        if ready:
            wait_ready(server)
        return server

    yield run
    for server in started:
        stop(server)


IRIS_WORKERS = 2
IRIS_THREADS = 2


@pytest.fixture(scope="session")
def shared_iris_server(models: dict[str, SavedModel], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The iris forest under gunicorn, pinned and named iris, ``IRIS_WORKERS`` workers of ``IRIS_THREADS`` threads,
    started once: each server costs seconds of CPU in imports alone. Tests get it as ``iris_server``."""
    iris = models["iris"]
    args = ("--model-uri", f"file://{iris.path}", "--model-sha256", iris.sha256, "--model-name", "iris")
    running = start(
        tmp_path_factory.mktemp("iris-server"), *args, "--workers", str(IRIS_WORKERS), "--threads", str(IRIS_THREADS)
    )
    try:
        wait_ready(running, workers=IRIS_WORKERS)  # every boot logged before a test's lines begin
        yield running
    finally:
        stop(running)


@pytest.fixture
def iris_server(shared_iris_server: Server) -> Server:
    """The shared iris server, its ``logs()`` this test's lines only: for a test that sends it requests and closes
    its connections. A test that stops, signals or reconfigures a server starts its own with ``serve``."""
    server = shared_iris_server
    assert server.proc.poll() is None, f"an earlier test stopped the shared server:\n{server.logs()}"
    return dataclasses.replace(server, log_start=server.log.stat().st_size)


class Origin(http.server.ThreadingHTTPServer):
    """A loopback HTTP server of ``files`` (path to bytes): ``failures`` GETs answer 503 before a file is served,
    and with ``authorization`` set, a request without that exact header gets ``refusal`` (401)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _OriginHandler)
        self.files: dict[str, bytes] = {}
        self.authorization: str | None = None
        self.refusal = 401
        self.seen: list[str | None] = []  # each request's Authorization header
        self.failures = 0
        self.hits = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class _OriginHandler(http.server.BaseHTTPRequestHandler):
    server: Origin

    def _refused(self) -> bool:
        """Answer the refusal without the right credentials, 404 for an unknown path; True when answered."""
        self.server.seen.append(self.headers.get("Authorization"))
        if self.server.authorization is not None and self.headers.get("Authorization") != self.server.authorization:
            self.send_error(self.server.refusal)
            return True
        if self.path not in self.server.files:
            self.send_error(404)
            return True
        return False

    def do_GET(self) -> None:
        self.server.hits += 1
        if self._refused():
            return
        if self.server.failures:
            self.server.failures -= 1
            self.send_error(503)
            return
        body = self.server.files[self.path]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:
        if not self._refused():
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.server.files[self.path])))
            self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def origin() -> Iterator[Origin]:
    server = Origin()
    # shutdown() waits for the loop's next poll: by default half a second of every test's teardown.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def typed_frame(rows: int, seed: int) -> pd.DataFrame:
    """A frame of every column type an input schema takes (double, long, integer, boolean, float)."""
    rng = np.random.RandomState(seed)
    return pd.DataFrame(
        {
            "length": rng.uniform(0, 5, rows),
            "count": rng.randint(0, 9, rows).astype(np.int64),
            "small": rng.randint(-3, 3, rows).astype(np.int32),
            "flag": rng.uniform(size=rows) > 0.5,
            "ratio": rng.uniform(size=rows).astype(np.float32),
        }
    )
