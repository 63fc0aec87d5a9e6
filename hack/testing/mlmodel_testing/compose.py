"""A ModelDeployment under Docker Compose, for the e2e tests and ``make demo-compose``: ``mlmodel compose render``
(``.venv/bin/mlmodel``), the pinned ``docker-compose`` (``make tools``) and the Docker engine the cluster harness
starts (``make images`` builds the images there)."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mlmodel_operator import names

from mlmodel_testing.cluster import REPO, run

BIN = REPO / ".venv" / "bin"
COMPOSE = BIN / "docker-compose"
MLMODEL = BIN / "mlmodel"
EXAMPLE = REPO / "manifests" / "examples" / "iris-canary-compose.yaml"
PROMETHEUS_IMAGE = "mlmodel-prometheus:3.13.5"  # hack/cluster's versions.PROMETHEUS_IMAGE, built by `make images`
ROW = {"instances": [[5.1, 3.5, 1.4, 0.2]]}


@dataclass(frozen=True)
class Project:
    """A rendered project: its directory (``compose.yaml`` and what it mounts), Compose project name and the
    router's (and Prometheus's) port on 127.0.0.1."""

    directory: Path
    name: str
    port: int
    prometheus_port: int

    @property
    def file(self) -> Path:
        return self.directory / "compose.yaml"

    def render(self, md: Path, *extra: str, check: bool = True) -> str:
        """``mlmodel compose render md``, with Prometheus: what it says on stderr."""
        argv = [str(MLMODEL), "compose", "render", str(md), "-o", str(self.file), "--port", str(self.port)]
        argv += ["--with-prometheus", "--prometheus-image", PROMETHEUS_IMAGE]
        argv += ["--prometheus-port", str(self.prometheus_port), *extra]
        return run(argv, check=check).stderr

    def compose(self, *args: str, check: bool = True, timeout: float = 300) -> str:
        """``docker compose -p NAME -f compose.yaml ARGS``: its output."""
        argv = [str(COMPOSE), "-p", self.name, "-f", str(self.file), *args]
        p = run(argv, check=check, timeout=timeout)
        return p.stdout + p.stderr

    def containers(self) -> dict[str, str]:
        """Each service's container ID (the services of one replica)."""
        ids = {}
        for line in self.compose("ps", "-a", "--format", "json").splitlines():
            if line.strip().startswith("{"):
                entry = json.loads(line)
                ids[entry["Service"]] = entry["ID"]
        return ids

    def health(self, service: str) -> str:
        """``healthy``, ``unhealthy`` or ``starting`` (or the container's state when it is not running)."""
        for line in self.compose("ps", "-a", "--format", "json", service).splitlines():
            if line.strip().startswith("{"):
                entry = json.loads(line)
                return str(entry.get("Health") or entry["State"])
        return "absent"

    def logs(self, service: str | None = None) -> str:
        return self.compose("logs", "--no-color", "--tail", "200", *([service] if service else []), check=False)

    def leftovers(self) -> dict[str, list[str]]:
        """The containers, networks and volumes that Docker still labels as the project's."""
        label = f"label=com.docker.compose.project={self.name}"
        return {
            kind: run(["docker", *argv, "--filter", label, "-q"]).stdout.split()
            for kind, argv in (
                ("containers", ["ps", "-a"]),
                ("networks", ["network", "ls"]),
                ("volumes", ["volume", "ls"]),
            )
        }

    def down(self) -> str:
        return self.compose("down", "-v", "--remove-orphans", "--timeout", "10", check=False)


def predict(port: int, timeout: float = 5) -> tuple[int, str | None, str | None]:
    """One prediction through the router on a new connection: status, the variant that answered and the router's
    weights."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", "/predict", json.dumps(ROW), {"Content-Type": "application/json"})
        reply = connection.getresponse()
        reply.read()
        return reply.status, reply.getheader(names.HEADER_VARIANT), reply.getheader(names.HEADER_ROUTER_WEIGHTS)
    finally:
        connection.close()


def split(port: int, requests: int) -> Counter[str | None]:
    """The variants that answered ``requests`` predictions, each 200 (anything else fails)."""
    seen: Counter[str | None] = Counter()
    for _ in range(requests):
        status, variant, _ = predict(port)
        assert status == 200, status
        seen[variant] += 1
    return seen


def in_effect(port: int, weights: str, seconds: float) -> float:
    """Seconds until the router answers with ``weights`` (e.g. ``stable=50,canary=50``); fails past ``seconds``."""
    start = time.monotonic()
    while True:
        status, _, current = predict(port)
        assert status == 200, status
        if current == weights:
            return time.monotonic() - start
        assert time.monotonic() - start < seconds, f"{weights} not in effect after {seconds} s (still {current})"
        time.sleep(0.05)


def routing(port: int, weights: str, seconds: float) -> None:
    """Wait until the router routes by ``weights``: after a start it answers 503 until its own probe (every second)
    has seen a variant ready, which may be a moment after Docker's healthcheck did."""
    deadline = time.monotonic() + seconds
    while (answer := predict(port))[::2] != (200, weights):
        assert time.monotonic() < deadline, f"not routing by {weights} after {seconds} s: {answer}"
        time.sleep(0.2)


@dataclass
class Load:
    """Requests at a steady rate on new connections, from a thread: what they got."""

    port: int
    rate: float
    answers: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failures) + sum(n for status, n in self.answers.items() if status != 200)


@contextmanager
def steady_load(port: int, rate: float) -> Iterator[Load]:
    """``rate`` requests a second on new connections until the block ends."""
    load, stop = Load(port, rate), threading.Event()

    def send() -> None:
        interval, due = 1 / rate, time.monotonic()
        while not stop.is_set():
            try:
                load.answers[predict(port)[0]] += 1
            except OSError as err:
                load.failures.append(repr(err))
            due += interval
            stop.wait(max(0.0, due - time.monotonic()))

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    try:
        yield load
    finally:
        stop.set()
        thread.join(10)
