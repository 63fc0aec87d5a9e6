"""Timeouts and liveness with the API server frozen: a real operator process, a real API server, and
between them a TCP proxy on loopback that stops forwarding bytes (keeping every connection open)
until it is thawed."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import selectors
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from mlmodel_operator import names

from conftest import Kubectl, eventually

API_TIMEOUT = 2.0  # connect and read, each
RESYNC = 1.0
STALL = 5.0
WATCH = 2  # each watch's length: a healthy watch makes progress at least this often
WATCH_LIMIT = WATCH + API_TIMEOUT + 10  # the operator's limit for a watch without progress
PROBE_CACHE = 10.0  # kopf answers a passing probe from its cache for this long


class FreezingProxy:
    """Forwards loopback connections to ``upstream`` while flowing; frozen, it reads and writes
    nothing (new connections are accepted and held too) until thawed."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.flowing = threading.Event()
        self.flowing.set()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def freeze(self) -> None:
        self.flowing.clear()

    def thaw(self) -> None:
        self.flowing.set()

    def close(self) -> None:
        self.closed = True
        self.flowing.set()
        self.listener.close()
        for sock in self.sockets:
            sock.close()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self.sockets += [client, server]
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with selectors.DefaultSelector() as selector, contextlib.suppress(OSError):
            selector.register(src, selectors.EVENT_READ)
            while not self.closed:
                self.flowing.wait()
                if not selector.select(timeout=0.1):
                    continue
                self.flowing.wait()  # frozen between select and recv: the bytes stay where they are
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        src.close()
        dst.close()


@pytest.fixture
def proxy() -> Iterator[FreezingProxy]:
    server = urlsplit(_kubeconfig()["clusters"][0]["cluster"]["server"])
    proxy = FreezingProxy((server.hostname or "127.0.0.1", server.port or 443))
    yield proxy
    proxy.close()


def _kubeconfig() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(Path(os.environ["KUBECONFIG"]).read_text())
    return loaded


@pytest.fixture
def proxied(proxy: FreezingProxy, tmp_path: Path) -> Path:
    """A kubeconfig with the same credentials, through the proxy. kopf does not honour
    ``tls-server-name``: the proxy listens on 127.0.0.1, an IP SAN of the API server's certificate."""
    config = _kubeconfig()
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


class Operator:
    """``python -m mlmodel_operator`` for one namespace, through the proxy, its log in a file."""

    def __init__(self, kubeconfig: Path, namespace: str, log: Path, *extra: str) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/healthz"
        self.log = log
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "RESYNC_SECONDS": str(RESYNC),
            "STALL_SECONDS": str(STALL),
            "WATCH_SECONDS": str(WATCH),
            "API_TIMEOUT_SECONDS": str(API_TIMEOUT),
            "ROUTER_IMAGE": "mlmodel-router:absent",
        }
        args = [
            "--namespace",
            namespace,
            "--liveness",
            self.url,
            "--metrics-port",
            "0",
            "--log-format",
            "plain",
            *extra,
        ]
        with log.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mlmodel_operator", *args], env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def live(self) -> bool:
        """Whether the liveness endpoint answers 2xx; ``False`` on any other answer."""
        try:
            with urllib.request.urlopen(self.url, timeout=5) as response:
                return bool(200 <= response.status < 300)
        except urllib.error.HTTPError:
            return False

    def answers(self) -> bool:
        try:
            self.live()
        except OSError:
            return False
        return True

    def logged(self, since: int = 0) -> str:
        return self.log.read_text()[since:]

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, as the kubelet stops a pod: the exit code, or ``None`` when it had to be killed."""
        self.process.terminate()
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None


@pytest.fixture
def operator(proxied: Path, proxy: FreezingProxy, namespace: str, tmp_path: Path) -> Iterator[Callable[..., Operator]]:
    """Start the operator (once the test has set the proxy up as it wants it)."""
    started: list[Operator] = []

    def start(*extra: str) -> Operator:
        started.append(Operator(proxied, namespace, tmp_path / f"operator-{len(started)}.log", *extra))
        return started[-1]

    yield start
    proxy.thaw()
    for running in started:
        if running.process.poll() is None:
            running.stop()


def _md(namespace: str) -> dict[str, object]:
    variant = {"name": "stable", "modelUri": "file:///models/iris.joblib", "modelSha256": "0" * 64, "weight": 100}
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": "iris", "namespace": namespace},
        "spec": {"variants": [variant]},
    }


def test_frozen_api_fails_the_probe_in_time_and_thawing_recovers(
    kubectl: Kubectl, namespace: str, proxy: FreezingProxy, operator: Callable[..., Operator]
) -> None:
    # Started with the API frozen: kopf's own calls time out (and are retried) rather than hang.
    proxy.freeze()
    running = operator()
    eventually(running.answers, "the liveness endpoint")
    up = time.monotonic()
    eventually(
        lambda: re.search(r"Request attempt #1/\d+ failed; will retry: GET .*Timeout", running.logged()),
        "kopf's first call to time out",
        deadline=3 * API_TIMEOUT + 2,
    )
    print(f"kopf's first call timed out {time.monotonic() - up:.1f} s after its endpoint came up")
    proxy.thaw()

    # Idle (no ModelDeployment): live for longer than the stall limit and kopf's cache of a passing probe.
    end = time.monotonic() + STALL + PROBE_CACHE + 1
    while time.monotonic() < end:
        assert running.live(), f"an idle operator failed its probe:\n{running.logged()}"
        time.sleep(0.25)

    kubectl.apply(_md(namespace))
    eventually(lambda: (kubectl.get("modeldeployment", "iris", namespace) or {}).get("status"), "a pass's status")
    assert running.live(), running.logged()

    offset = len(running.logged())
    proxy.freeze()
    frozen = time.monotonic()
    # Passes read the watches' cache and need no call to finish, but every watch now times out
    # rather than hangs, and so does every list that follows.
    eventually(
        lambda: running.logged(offset).count("list or watch of") >= 2,
        "two failed lists or watches",
        deadline=WATCH + 3 * API_TIMEOUT + 5,
    )
    assert "ReadTimeoutError" in running.logged(offset)
    # No watch makes progress: the probe fails once the watch limit is reached (seen late by up to kopf's cache).
    eventually(lambda: not running.live(), "the probe to fail", deadline=WATCH_LIMIT + PROBE_CACHE + 10)
    failed = time.monotonic() - frozen
    assert failed <= WATCH_LIMIT + PROBE_CACHE + 1, (failed, running.logged(offset))
    assert "has made no progress for" in running.logged(offset)

    proxy.thaw()
    thawed = time.monotonic()
    eventually(running.live, "the probe to pass again", deadline=30)
    recovered = time.monotonic() - thawed
    # A watch lists again after its back-off (at most 10 s after a few failures), then goes on.
    assert recovered <= 10 + 2 * API_TIMEOUT + 1, (recovered, running.logged(offset))
    print(f"probe failed {failed:.1f} s after freezing, passed {recovered:.1f} s after thawing")


def test_sigterm_stops_at_once_and_releases_the_lease(
    kubectl: Kubectl, namespace: str, operator: Callable[..., Operator]
) -> None:
    running = operator("--leader-election", "--leader-election-namespace", namespace, "--leader-election-id", "op")
    eventually(lambda: (kubectl.get("lease", "op", namespace) or {}).get("spec", {}).get("holderIdentity"), "a leader")
    eventually(lambda: "Activity 'startup' succeeded" in running.logged(), "kopf to run")
    assert running.stop(timeout=10) == 0, running.logged()
    assert "holderIdentity" not in kubectl.read("lease", "op", namespace)["spec"]


PROBE = """
import json, sys, time
from mlmodel_operator import config, kube
kube.configure(config.parse([]))  # API_TIMEOUT_SECONDS from the environment
kube.get("v1", "ConfigMap", sys.argv[1], "absent")
print("warm", flush=True)
sys.stdin.readline()
for _ in range(2):  # on the connection in the pool, then on a new one
    started = time.monotonic()
    try:
        kube.get("v1", "ConfigMap", sys.argv[1], "absent")
        outcome = "answered"
    except Exception as err:
        outcome = type(err).__name__
    print(json.dumps([outcome, time.monotonic() - started]), flush=True)
"""


def test_a_call_to_a_frozen_api_fails_within_its_timeouts(proxy: FreezingProxy, proxied: Path, namespace: str) -> None:
    env = {**os.environ, "KUBECONFIG": str(proxied), "API_TIMEOUT_SECONDS": str(API_TIMEOUT)}
    process = subprocess.Popen(
        [sys.executable, "-c", PROBE, namespace], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in process.stdout or ():
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()

    def answer() -> str:
        try:
            return lines.get(timeout=30)
        except queue.Empty:
            pytest.fail("no answer in 30 s: the call hangs")

    try:
        assert answer() == "warm\n"
        proxy.freeze()
        assert process.stdin is not None
        process.stdin.write("\n")
        process.stdin.flush()
        for _ in range(2):
            outcome, seconds = json.loads(answer())
            print(f"{outcome} after {seconds:.2f} s")
            assert outcome == "ReadTimeoutError"
            assert 0.9 * API_TIMEOUT <= seconds <= 2 * API_TIMEOUT  # connect + read, and no retries
    finally:
        process.kill()
        process.wait()
