"""The rendered router configuration run by a real nginx (Debian's, with the Lua module, as in the
router image) on loopback: what the router answers itself, and what its /metrics counts.

One variant's upstream is a small HTTP server on 127.0.0.2; the other's address has nothing
listening, so nginx gets a refused connection, as from a Service whose pods just died.
"""

from __future__ import annotations

import http.server
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

import pytest
from mlmodel_operator import names, traffic
from test_render import parsed
from test_traffic import TWO

UP, DOWN = "127.0.0.2", "127.0.0.3"


class _Variant(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b'{"predictions":[0]}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


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


@pytest.fixture
def router(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """nginx running the two-variant config: stable answers, canary's address refuses connections."""
    assert _refused(DOWN, names.SERVICE_PORT), f"{DOWN}:{names.SERVICE_PORT} must have nothing listening"
    upstream = http.server.ThreadingHTTPServer((UP, names.SERVICE_PORT), _Variant)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    data, admin = _free_port(), _free_port()
    rendered = traffic.router_config(parsed(variants=TWO), {"stable": UP, "canary": DOWN}, str(tmp_path), str(tmp_path))
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
    base, metrics = f"http://127.0.0.1:{data}", f"http://127.0.0.1:{admin}/metrics"
    try:
        deadline = time.monotonic() + 10
        while _refused("127.0.0.1", admin):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        yield base, metrics
    finally:
        proc.terminate()
        proc.wait(10)
        upstream.shutdown()
        upstream.server_close()


def _post(base: str, variant: str) -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"{base}/v2/models/iris/infer", data=b"{}", headers={names.HEADER_VARIANT: variant}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _counted(metrics: str) -> dict[tuple[str, str], int]:
    with urllib.request.urlopen(metrics, timeout=5) as r:
        text = r.read().decode()
    series = r'mlmodel_router_requests_total\{model="iris",variant="([^"]+)",status_class="(\dxx)"\} (\d+)'
    found = re.findall(series, text)
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
