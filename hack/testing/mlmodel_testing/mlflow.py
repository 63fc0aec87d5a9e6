"""A real MLflow tracking server on loopback, and models registered on it with the real client.

The server runs from a venv of its own (``make mlflow-server``): mlflow pins gunicorn below the model server's, so
it cannot share the repo's. Its access log tells which requests it answered (``Server.requests``).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import re
import secrets
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import mlflow
import mlflow.sklearn
import pandas as pd
from mlmodel_operator.registry import Credentials
from sklearn.datasets import load_iris

from mlmodel_testing.cluster import CACHE, Cluster, free_port
from mlmodel_testing.minio import Store
from mlmodel_testing.models import MLFLOW_SERVER

# `make mlflow-server` makes it, at the version of the client requirements-dev.txt pins (mlflow-skinny).
SERVER_VENV = CACHE / f"mlflow-server-{importlib.metadata.version('mlflow-skinny')}"
START_SECONDS = 120.0  # about 20 s: mlflow imports for 7 s, twice, and migrates its database
TREE = "sklearn.tree._tree.Tree"  # what a forest's skops file holds that skops does not trust by default
ADMIN = "admin"  # basic auth's admin, as MLflow's basic_auth.ini names it
_REQUEST = re.compile(r'"([A-Z]+) (\S+) HTTP/[\d.]+" \d{3}')  # an access log line's (uvicorn's)


@dataclass(frozen=True)
class Server:
    """A running tracking server: its URL, its log, and with basic auth its admin's user name and password."""

    url: str
    log: Path
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def credentials(self) -> Credentials | None:
        """The admin's, with basic auth."""
        return None if self.username is None else Credentials(username=self.username, password=self.password)

    def requests(self) -> list[str]:
        """Every request the server has answered, ``GET /path?query``, but its health checks; all of them, as its
        access log is written after the answer: a request of its own marks the end."""
        mark = f"/health?mark={uuid.uuid4().hex}"
        urllib.request.urlopen(f"{self.url}{mark}", timeout=10).close()
        deadline = time.monotonic() + 10
        while ("GET", mark) not in (seen := _REQUEST.findall(self.log.read_text())):
            assert time.monotonic() < deadline, f"the access log of {self.url} never showed {mark}"
            time.sleep(0.05)
        return [f"{method} {path}" for method, path in seen if not path.startswith("/health")]


@contextlib.contextmanager
def tracking_server(
    workdir: Path, *, basic_auth: bool = False, s3: Store | None = None, root: Path | None = None
) -> Iterator[Server]:
    """MLflow's tracking server, its registry and artifact proxy (``mlflow-artifacts:/``) on a free loopback port,
    keeping everything in ``workdir``, until the block ends; with ``basic_auth``, MLflow's basic-auth app and an
    admin of a new password; with ``s3``, no proxy: the artifacts' locations are in that S3 store's bucket
    (``s3://``), which the clients read and write themselves (``s3_client_env``); with ``root``, no proxy either:
    their locations are paths under ``root``, as on a volume that the server and the clients mount. Its log is
    printed if it cannot start or the block fails."""
    program = SERVER_VENV / "bin" / "mlflow"
    if not program.exists():
        raise AssertionError(f"no MLflow tracking server at {program}: run `make mlflow-server`")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = Server(f"http://127.0.0.1:{port}", workdir / "mlflow.log")
    argv = [str(program), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    argv += ["--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job runner: 7 processes fewer
    if root is not None:
        argv += ["--no-serve-artifacts", "--default-artifact-root", str(root)]
    elif s3 is None:
        argv += ["--serve-artifacts", "--artifacts-destination", str(workdir / "artifacts")]
    else:
        argv += ["--no-serve-artifacts", "--default-artifact-root", f"s3://{s3.bucket}/"]
        env |= s3_client_env(s3)
    if basic_auth:
        # The default basic_auth.ini keeps its users in basic_auth.db in the working directory, workdir.
        server = Server(server.url, server.log, ADMIN, secrets.token_urlsafe(16))
        argv += ["--app-name", "basic-auth"]
        env |= {"MLFLOW_AUTH_ADMIN_PASSWORD": str(server.password), "MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex}
    with server.log.open("wb") as log:
        proc = subprocess.Popen(
            argv,
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        _wait_healthy(proc, server)
        yield server
    except Exception:
        print(f"\n===== MLflow tracking server log =====\n{server.log.read_text()[-20000:]}")
        raise
    finally:
        _stop(proc)


def _wait_healthy(proc: subprocess.Popen[bytes], server: Server) -> None:
    deadline = time.monotonic() + START_SECONDS
    while proc.poll() is None:
        try:
            urllib.request.urlopen(f"{server.url}/health", timeout=2).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"the MLflow tracking server did not answer in {START_SECONDS:.0f}s"
            time.sleep(0.25)
    raise AssertionError(f"the MLflow tracking server exited with {proc.returncode} before it answered")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """End the server and every process it started (its process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(15)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # what outlived it
    proc.wait()


def s3_client_env(store: Store) -> dict[str, str]:
    """The environment in which MLflow (its client, with boto3) reads and writes artifacts in ``store``."""
    return {**store.env(), "MLFLOW_S3_ENDPOINT_URL": store.endpoint}


@contextlib.contextmanager
def _signed_in(credentials: Credentials | None) -> Iterator[None]:
    """The client's environment variables set to ``credentials`` for the block."""
    values = {}
    if credentials is not None:
        values = {
            "MLFLOW_TRACKING_TOKEN": credentials.token,
            "MLFLOW_TRACKING_USERNAME": credentials.username,
            "MLFLOW_TRACKING_PASSWORD": credentials.password,
        }
    before = {name: os.environ.get(name) for name in values}
    os.environ.update({name: value for name, value in values.items() if value is not None})
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def register(
    url: str,
    name: str,
    estimator: Any,
    *,
    alias: str | None = None,
    credentials: Credentials | None = None,
    **options: Any,
) -> str:
    """Log ``estimator`` in a new run as a logged model called ``model`` (``mlflow.sklearn.log_model``, with
    ``options`` such as ``input_example`` or ``skops_trusted_types``), register it as the next version of ``name``
    on the tracking server at ``url``, and point ``alias`` at it: its version. Sets the client's tracking URI."""
    mlflow.set_tracking_uri(url)
    with _signed_in(credentials), mlflow.start_run():
        # pip_requirements: the client would otherwise spend seconds finding them in a subprocess.
        info = mlflow.sklearn.log_model(
            estimator,
            name="model",
            registered_model_name=name,
            **{"pip_requirements": ["scikit-learn"], **options},
        )
        version = str(info.registered_model_version)
        if alias is not None:
            mlflow.MlflowClient(url).set_registered_model_alias(name, alias, version)
    return version


def deploy_tracking_server(cluster: Cluster, namespace: str) -> None:
    """``manifests/examples/mlflow.yaml`` in ``namespace``, until it answers."""
    cluster.kubectl("-n", namespace, "apply", "-f", str(MLFLOW_SERVER))
    cluster.kubectl("-n", namespace, "rollout", "status", "deployment/mlflow", "--timeout=180s")


def register_forests(url: str, name: str, models: Path, *files: str) -> list[str]:
    """The example forests ``files`` (joblib, in ``models``) registered as the next versions of ``name``, as a user
    logs a forest: skops (MLflow's default) trusting its trees, with the signature of its columns. Their versions."""
    versions = []
    for file in files:
        forest = joblib.load(models / file)
        example = pd.DataFrame(load_iris().data[:2], columns=forest.feature_names_in_)  # the names it was fitted on
        versions.append(register(url, name, forest, input_example=example, skops_trusted_types=[TREE]))
    return versions
