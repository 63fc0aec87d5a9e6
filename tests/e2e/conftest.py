"""The e2e tests' fixtures; what they reach the cluster with is ``mlmodel_testing`` (``hack/testing``).

``cluster`` brings the cluster up through the harness (idempotent: a running cluster is reused in a second
or two) and is a ``mlmodel_testing.cluster.Cluster``: ``kubectl``, ``get``, ``apply``,
``service_url(namespace, name, port)``, ``wait_until(...)`` and ``dump(namespace)``. If the cluster cannot
be had the suite fails (loudly, with the harness's output); it never skips. ``MLMODEL_E2E_NO_UP=1`` uses
``.cluster/kubeconfig`` as it is, without running the harness.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mlmodel_testing.cluster import SERVER_IMAGE, STATE, Cluster, harness
from mlmodel_testing.host import TEARDOWN_MARK
from mlmodel_testing.models import train_models
from mlmodel_testing.release import NAMESPACE, RELEASE, helm, install, leader_log


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    if os.environ.get("MLMODEL_E2E_NO_UP") != "1":
        with _locked(STATE / "e2e-up.lock"):  # one `up` at a time: xdist workers would restart a daemon twice
            p = harness("up")
        if p.returncode != 0:
            pytest.fail(
                f"the test cluster could not be brought up:\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}", pytrace=False
            )
    kubeconfig = STATE / "kubeconfig"
    if not kubeconfig.exists():
        pytest.fail(
            f"no kubeconfig at {kubeconfig}: the cluster is not up (run `make cluster-up`)",
            pytrace=False,
        )
    c = Cluster.at(STATE)
    ready = c.kubectl("get", "--raw", "/readyz", check=False)
    if ready.returncode != 0:
        pytest.fail(f"the cluster's API server is not ready: {ready.stderr}", pytrace=False)
    return c


@pytest.fixture(scope="session")
def images() -> None:
    """The images the tests run (the server's, the operator's, the router's, Prometheus's for Docker Compose),
    built, and loaded into the cluster if one is up; Docker Compose's tests need no cluster. Builds are cached by
    docker, and loading skips images the runtime already has, so this is quick after ``make images``. Not the
    examples' MLflow server (``mlflow_image``), which a kind cluster would load for nothing."""
    _images("--no-examples")


@pytest.fixture(scope="session")
def mlflow_image(images: None) -> None:
    """The examples' MLflow tracking server's image too (0.5 GB: ``make test`` loads it in the background while the
    suite starts, and this waits for that)."""
    _images()


def _images(*flags: str) -> None:
    if os.environ.get("MLMODEL_E2E_NO_UP") != "1":
        with _locked(STATE / "e2e-up.lock"):
            p = harness("images", *flags)
        if p.returncode != 0:
            pytest.fail(f"building/loading the images failed:\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}", pytrace=False)


@pytest.fixture(scope="session")
def server_image(cluster: Cluster, images: None) -> str:
    """``mlmodel-server:0.1.0``, with all images built and loaded into the cluster (``make images``)."""
    return SERVER_IMAGE


@pytest.fixture(scope="session")
def operator(cluster: Cluster, server_image: str) -> Iterator[None]:
    """The CRD and the operator: ``helm upgrade --install`` of charts/mlmodel (release ``mlmodel`` in
    ``mlmodel-system``, see ``mlmodel_testing.release``; idempotent, and its pods roll only when the operator
    image changed). One install per run, under a lock, however many xdist workers ask for it. A run without
    xdist (the ``serial`` tests) uninstalls it at the end, so that no operator is left to fight another (the
    integration tests run their own); the CRD stays (``crds.keep``)."""
    with _locked(STATE / "e2e-release.lock"):
        install(cluster)
    yield
    if "PYTEST_XDIST_WORKER" not in os.environ:
        helm(cluster, "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", check=False)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (the xdist workers are processes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example models iris and iris-v2, trained here."""
    out = tmp_path_factory.mktemp("models")
    train_models(out)
    return out


@pytest.fixture
def call_failed(request: pytest.FixtureRequest) -> Callable[[], bool]:
    """Whether the test itself failed, for a fixture's teardown to print what it holds: a fixture never sees the
    test's exception at its ``yield`` (``pytest_runtest_makereport`` keeps the report)."""

    def failed() -> bool:
        rep = getattr(request.node, "rep_call", None)
        return rep is not None and bool(rep.failed)

    return failed


@pytest.fixture
def namespace(cluster: Cluster, call_failed: Callable[[], bool]) -> Iterator[str]:
    """A fresh namespace; on failure its pods/logs/events are printed, then it is deleted."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    cluster.wait_until(
        f"default ServiceAccount in {name}",
        lambda: cluster.kubectl("-n", name, "get", "sa", "default", check=False).returncode == 0,
        60,
    )
    yield name
    if call_failed():
        print(f"\n===== cluster state of namespace {name} =====\n{cluster.dump(name)}")
        print(f"\n===== the operator leader's log about {name} =====\n{leader_log(cluster, name)}")
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{rep.when}", rep)


SERIAL = "serial"
LONG = "long"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{SERIAL}: changes the shared release or needs the cluster idle; run after the others, one at a time",
    )
    config.addinivalue_line("markers", f"{TEARDOWN_MARK}: runs `make cluster-down`; ordered last (and serial)")
    config.addinivalue_line(
        "markers", f"{LONG}: takes minutes; its file goes to an xdist worker first, so that the workers end together"
    )


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker(TEARDOWN_MARK) is not None:
            item.add_marker(SERIAL)
    # xdist deals the files out in this order (`--no-loadscope-reorder`): the long ones first.
    items.sort(key=lambda it: (it.get_closest_marker(TEARDOWN_MARK) is not None, it.get_closest_marker(LONG) is None))
