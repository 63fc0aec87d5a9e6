"""What a rollout's analysis reads (``measure``), from real servers on loopback: router pods' ``/metrics`` found
through the operator's cache of pods, and a real Prometheus (the one ``make install`` builds) that scrapes them."""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlmodel_operator import analysis, cache, measure, names, reconcile, spec
from mlmodel_operator.spec import Prometheus
from test_analysis import METRICS
from test_render import resource
from test_router_nginx import serving

ROUTER, SILENT = "127.0.0.11", "127.0.0.12"  # a router pod that answers, and one whose address answers nothing
PROMETHEUS = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "prometheus"


class _Router(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = METRICS.encode()
        self.send_response(200 if self.path == "/metrics" else 404)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _router() -> contextlib.AbstractContextManager[None]:
    return serving(ROUTER, _Router, names.ROUTER_ADMIN_PORT)


def _pod(name: str, ip: str | None) -> dict[str, Any]:
    """A router pod of ``iris`` as the API server gives it."""
    status: dict[str, Any] = {"phase": "Running", "hostIP": "10.0.0.1", "qosClass": "Burstable"}
    if ip:
        status |= {"podIP": ip, "podIPs": [{"ip": ip}]}
    labels = names.router_labels("iris")
    meta = {"name": name, "namespace": "ml", "labels": labels, "resourceVersion": "1", "managedFields": [{}]}
    return {"metadata": meta, "spec": {"containers": [{"name": "router"}]}, "status": status}


def test_every_router_pod_the_cache_knows_is_read_and_one_that_does_not_answer_is_left_out() -> None:
    store = cache.Store()
    pods = [_pod("iris-router-a", ROUTER), _pod("iris-router-b", SILENT), _pod("iris-router-c", None)]
    store.replace("Pod", None, pods)
    found = store.list_objects("v1", "Pod", "ml", names.router_selector("iris"))
    with _router():
        started = time.monotonic()
        read = measure.routers(found)
    assert read == {"iris-router-a": analysis.parse(METRICS)}
    assert time.monotonic() - started < measure.TIMEOUT_SECONDS + 1
    assert measure.routers([]) == {}


def test_a_router_pod_that_goes_mid_interval_keeps_its_last_counts() -> None:
    """What the analysis reads during a rollout (``reconcile._routers``): a router pod deleted before the interval
    ends (a new router configuration rolls the pods) still counts what it answered until its last read."""
    store, memory = cache.Store(), dict[str, Any]()
    md = spec.parse(resource(), default_image="i")
    store.replace("Pod", None, [_pod("iris-router-a", ROUTER)])
    with _router():
        first = reconcile._routers(md, store, memory)
    store.replace("Pod", None, [])
    assert first == reconcile._routers(md, store, memory) == {"iris-router-a": analysis.parse(METRICS)}


def test_a_prometheus_query_is_read_from_a_real_prometheus(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [{"job_name": "router", "static_configs": [{"targets": [f"{ROUTER}:8081"]}]}],
    }
    (tmp_path / "prometheus.yml").write_text(json.dumps(config))
    address = f"http://127.0.0.1:{port}"
    five_xx = Prometheus(address, 'sum(mlmodel_router_requests_total{variant="r2",status_class="5xx"})', max=1)
    with _router(), _prometheus(tmp_path, port):
        deadline = time.monotonic() + 60
        while (value := measure.query(five_xx)) is None:
            assert time.monotonic() < deadline, "Prometheus never had the router's series"
            time.sleep(0.5)
        assert value == 7
        assert measure.query(Prometheus(address, "vector(0.25)", max=1)) == 0.25
        assert measure.query(Prometheus(address, "scalar(vector(2))", max=1)) == 2
        # Several samples, or none, or a query Prometheus refuses: no value, so the gate is not judged.
        assert measure.query(Prometheus(address, "mlmodel_router_requests_total", max=1)) is None
        assert measure.query(Prometheus(address, "absent_metric_here", max=1)) is None
        assert measure.query(Prometheus(address, "sum(", max=1)) is None
    assert measure.query(Prometheus(address, "vector(1)", max=1)) is None  # Prometheus is gone


@contextlib.contextmanager
def _prometheus(workdir: Path, port: int) -> Iterator[None]:
    proc = subprocess.Popen(
        [
            str(PROMETHEUS),
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(30)
