"""The rendered router configuration run by a real nginx (Debian's, with the Lua module, as in the
router image) on loopback: what the router answers itself, and what its /metrics counts.

One variant's upstream is a small HTTP server on 127.0.0.2; the other's address has nothing
listening, so nginx gets a refused connection, as from a Service whose pods just died.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from mlmodel_operator import names, spec
from mlmodel_operator.router import traffic
from test_render import parsed
from test_router_traffic import TWO, WITH_SHADOW

UP, DOWN, SLOW = "127.0.0.2", "127.0.0.3", "127.0.0.4"
MIRRORED = "mlmodel_router_mirrored_requests_total"


class _Variant(http.server.BaseHTTPRequestHandler):
    """A variant that answers 200 at once, or (``slow``) a 500 after 2 s."""

    slow = False
    received: ClassVar[list[tuple[str, str, bytes]]] = []  # path, content type, body

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append((self.path, self.headers.get("Content-Type", ""), body))
        if self.slow:
            time.sleep(2)
        answer = b'{"predictions":[0]}'
        self.send_response(500 if self.slow else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


class _Slow(_Variant):
    slow = True
    received: ClassVar[list[tuple[str, str, bytes]]] = []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


@contextlib.contextmanager
def _serving(address: str, handler: type[_Variant]) -> Iterator[None]:
    server = http.server.ThreadingHTTPServer((address, names.SERVICE_PORT), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def _nginx(tmp_path: Path, md: spec.ModelDeployment, upstreams: dict[str, str]) -> Iterator[tuple[str, str]]:
    """nginx running the config rendered for ``md``: the data server's base URL and /metrics."""
    data, admin = _free_port(), _free_port()
    rendered = traffic.router_config(md, upstreams, str(tmp_path), str(tmp_path))
    for name, text in rendered.files.items():
        # The pod listens on every address; here, on loopback ports of our own.
        text = text.replace(f"listen {names.ROUTER_PORT};", f"listen 127.0.0.1:{data};")
        (tmp_path / name).write_text(text.replace(f"listen {names.ROUTER_ADMIN_PORT};", f"listen 127.0.0.1:{admin};"))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = subprocess.Popen(
        [nginx, "-c", str(tmp_path / traffic.NGINX_CONF), "-e", "stderr", "-g", "daemon off; user root;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while _refused("127.0.0.1", admin):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        yield f"http://127.0.0.1:{data}", f"http://127.0.0.1:{admin}/metrics"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def router(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The two-variant config: stable answers, canary's address refuses connections."""
    assert _refused(DOWN, names.SERVICE_PORT), f"{DOWN}:{names.SERVICE_PORT} must have nothing listening"
    with _serving(UP, _Variant), _nginx(tmp_path, parsed(variants=TWO), {"stable": UP, "canary": DOWN}) as urls:
        yield urls


BODY = b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]}'
HEADERS = {"Content-Type": "application/json"}


def _post(base: str, variant: str) -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"{base}/v2/models/iris/infer", data=BODY, headers={**HEADERS, names.HEADER_VARIANT: variant}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _counted(metrics: str, name: str = "mlmodel_router_requests_total") -> dict[tuple[str, str], int]:
    with urllib.request.urlopen(metrics, timeout=5) as r:
        text = r.read().decode()
    found = re.findall(name + r'\{model="iris",variant="([^"]+)",status_class="(\dxx)"\} (\d+)', text)
    return {(variant, status): int(n) for variant, status, n in found}


def test_refused_connections_are_a_502_json_counted_against_the_variant(router: tuple[str, str]) -> None:
    base, metrics = router
    answers = [_post(base, "stable") for _ in range(3)] + [_post(base, "canary") for _ in range(2)]
    assert [status for status, _ in answers] == [200, 200, 200, 502, 502]
    assert b'"code":"upstream_failed"' in answers[-1][1], answers[-1]
    unknown = _post(base, "nope")
    assert unknown[0] == 400 and b'"code":"unknown_variant"' in unknown[1], unknown
    counted = _counted(metrics)
    assert counted[("stable", "2xx")] == 3, counted
    assert counted[("canary", "5xx")] == 2, counted
    assert counted[("none", "4xx")] == 1, counted


def test_a_slow_failing_mirror_neither_slows_nor_fails_the_primary(tmp_path: Path) -> None:
    """Every request is copied to a shadow that takes 2 s and answers 500: clients get the primary's
    200 at once, on new connections and on one kept alive, and the copies are counted on their own."""
    md = parsed(variants=WITH_SHADOW, routing={"mirror": {"variant": "shadow", "percent": 100}})
    upstreams = {"stable": UP, "canary": UP, "shadow": SLOW}
    with _serving(UP, _Variant), _serving(SLOW, _Slow), _nginx(tmp_path, md, upstreams) as (base, metrics):
        timed = []
        kept = http.client.HTTPConnection("127.0.0.1", int(base.rsplit(":", 1)[1]), timeout=5)
        for i in range(6):
            started = time.monotonic()
            if i % 2:
                kept.request("POST", "/v2/models/iris/infer", BODY, {**HEADERS, names.HEADER_VARIANT: "stable"})
                reply = kept.getresponse()
                reply.read()
                status = reply.status
            else:
                status, _ = _post(base, "stable")
            timed.append((status, round(time.monotonic() - started, 3)))
        kept.close()
        assert [status for status, _ in timed] == [200] * 6, timed
        assert max(seconds for _, seconds in timed) < 0.5, timed
        deadline = time.monotonic() + 10
        while _counted(metrics, MIRRORED).get(("shadow", "5xx"), 0) < 6:
            assert time.monotonic() < deadline, _counted(metrics, MIRRORED)
            time.sleep(0.1)
        assert _counted(metrics)[("stable", "2xx")] == 6
    assert _Slow.received == [("/v2/models/iris/infer", "application/json", BODY)] * 6


def test_with_no_variant_ready_the_router_answers_503_json(tmp_path: Path) -> None:
    with _nginx(tmp_path, parsed(variants=TWO), {}) as (base, metrics):
        status, body = _post(base, "")  # an empty header: no pin, the weights choose
        assert status == 503, (status, body)
        error = json.loads(body)
        assert error["code"] == "no_variant" and "no variant of iris is ready" in error["error"], error
        assert _counted(metrics)[("none", "5xx")] == 1
