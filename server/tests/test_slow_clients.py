"""Slow clients on a real gunicorn: connections that trickle their request never hold a request thread."""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

import orjson
import requests

from mlmodel_server import worker
from mlmodel_server.config import Settings
from mlmodel_server.worker import HEADER_TIMEOUT_S

from conftest import IRIS_ROWS, IRIS_THREADS, IRIS_WORKERS, SavedModel, Server

SLOW = 200


def _open_slow(port: int, i: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    if i % 2:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")  # headers never end
    else:  # headers, then a body that never comes
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
        )
    return sock


def _answers_within_a_second(url: str) -> None:
    for path in ("/predict", "/healthz"):
        start = time.monotonic()
        if path == "/predict":
            r = requests.post(url + path, json={"instances": IRIS_ROWS}, timeout=1)
        else:
            r = requests.get(url + path, timeout=1)
        assert r.status_code == 200, path
        assert time.monotonic() - start < 1.0, path


def test_slow_connections_do_not_freeze_predict_or_healthz(iris_server: Server) -> None:
    pid = iris_server.proc.pid
    slow = [_open_slow(iris_server.port, i) for i in range(SLOW)]
    try:
        for sock in slow[:2]:  # the server has read them: they are its own now, not the kernel's backlog
            sock.sendall(b" ")
        _answers_within_a_second(iris_server.url)
        assert iris_server.proc.poll() is None and iris_server.proc.pid == pid
        partial_head = slow[1]
        partial_head.settimeout(HEADER_TIMEOUT_S + 5)
        assert partial_head.recv(1) == b"", "the server closes a connection whose headers never end"
    finally:
        for sock in slow:
            sock.close()


def test_a_kept_alive_connection_that_stalls_holds_no_thread(iris_server: Server) -> None:
    body = orjson.dumps({"instances": IRIS_ROWS})
    request = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    stalled = []
    for _ in range(2 * IRIS_WORKERS * IRIS_THREADS):  # twice the threads: each answered, then left half-way through
        sock = socket.create_connection(("127.0.0.1", iris_server.port), timeout=5)
        sock.sendall(request % len(body) + body)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        sock.sendall(request % len(body) + body[:3])
        stalled.append(sock)
    try:
        _answers_within_a_second(iris_server.url)
    finally:
        for sock in stalled:
            sock.close()


def test_a_body_larger_than_accepted_is_413_at_once(iris_server: Server) -> None:
    with socket.create_connection(("127.0.0.1", iris_server.port), timeout=5) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
        sock.sendall(b"Content-Length: %d\r\n\r\n" % (Settings.max_body_bytes + 1))  # the default --max-body-bytes
        assert sock.recv(65536).startswith(b"HTTP/1.1 413")


def _vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


def test_a_worker_buffers_large_bodies_up_to_its_budget_and_no_further(serve, models: dict[str, SavedModel]) -> None:  # type: ignore[no-untyped-def]
    mib, iris = 1 << 20, models["iris"]
    pinned = ("--model-uri", f"file://{iris.path}", "--model-sha256", iris.sha256, "--model-name", "iris")
    server = serve(*pinned, "--max-body-bytes", str(16 * mib), "--workers", "1", "--no-preload")
    (child,) = (int(p) for p in Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split())
    before = _vm_kib(child, "VmRSS")
    head = b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
    senders = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(10)]
    for sock in senders:
        sock.setblocking(False)
    pending = [head + b"Content-Length: %d\r\n\r\n" % (16 * mib) + bytes(15 * mib) for _ in senders]
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # 150 MiB of bodies that never end, as fast as the server takes them
            for i, sock in enumerate(senders):
                with contextlib.suppress(BlockingIOError):
                    pending[i] = pending[i][sock.send(pending[i][: 1 << 20]) :]
            taken = sum(15 * mib - len(p) for p in pending)
            if taken > 100 * mib and not any(len(p) < mib for p in pending[4:]):
                break
        _answers_within_a_second(server.url)  # a small request is read whatever the budget
        grown = (_vm_kib(child, "VmHWM") - before) * 1024
        assert grown < 80 * mib, f"the worker grew by {grown >> 20} MiB for a 64 MiB budget"
        assert sum(1 for p in pending if not p) <= 4, "more bodies taken whole than the budget holds"
    finally:
        for sock in senders:
            sock.close()


def test_chunked_bodies_are_read_whole_by_their_last_chunk() -> None:
    def complete(body: bytes) -> bool:
        return worker._chunked_complete(bytearray(b"HEAD\r\n\r\n" + body), 8)

    assert complete(b"4\r\nab0\r\n0\r\n\r\n")
    assert complete(b"4;ext=1\r\nabcd\r\n0\r\nTrailer: x\r\n\r\n")
    assert not complete(b"5\r\nab0\r\n\r\n")  # ends like a last chunk, but is inside a chunk's data
    assert not complete(b"4\r\nabcd\r\n0\r\nTrailer: x\r\n")
    assert complete(b"-5\r\nab")  # not chunked: handed on, for gunicorn's parser to refuse


def test_a_large_body_answered_before_it_is_read_keeps_the_connection(iris_server: Server) -> None:
    """A 2 MiB JSON body gets its 413 before the app reads it; the next request on the connection is served."""
    small = orjson.dumps({"instances": IRIS_ROWS})
    large = b'{"instances": [' + b"[1,2,3,4]," * 200_000 + b"[1,2,3,4]]}"
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    with socket.create_connection(("127.0.0.1", iris_server.port), timeout=5) as sock:
        reader = sock.makefile("rb")
        answers = []
        for body in (large, small):
            sock.sendall(head % len(body) + body)
            status = reader.readline()
            headers = {}
            while (line := reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            reader.read(int(headers.get("content-length", 0)))
            answers.append((status.split()[1] if status else b"closed", headers.get("connection")))
    assert answers == [(b"413", "keep-alive"), (b"200", "keep-alive")], answers
