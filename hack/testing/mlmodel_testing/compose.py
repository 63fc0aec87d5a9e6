"""A ModelDeployment under Docker Compose, for the e2e tests and ``make demo-compose``: ``mlmodel compose render``
(``.venv/bin/mlmodel``), the pinned ``docker-compose`` (``make tools``) and the Docker engine the cluster harness
starts (``make images`` builds the images there)."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from mlmodel_testing.cluster import REPO, run
from mlmodel_testing.load import call

BIN = REPO / ".venv" / "bin"
COMPOSE = BIN / "docker-compose"
MLMODEL = BIN / "mlmodel"
EXAMPLE = REPO / "manifests" / "examples" / "iris-canary-compose.yaml"
PROMETHEUS_IMAGE = "mlmodel-prometheus:3.13.5"  # hack/cluster's versions.PROMETHEUS_IMAGE, built by `make images`


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
        """``docker compose -p NAME -f compose.yaml ARGS`` (without ``-f`` once the file is gone: Compose finds the
        project's containers, network and volume by its labels): its output."""
        file = ["-f", str(self.file)] if self.file.exists() else []
        p = run([str(COMPOSE), "-p", self.name, *file, *args], check=check, timeout=timeout)
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


def base(port: int) -> str:
    """A published port's URL on the host (the router's, Prometheus's)."""
    return f"http://127.0.0.1:{port}"


def split(port: int, requests: int) -> Counter[str | None]:
    """The variants that answered ``requests`` predictions, each on a new connection and each 200 (anything else
    fails)."""
    seen: Counter[str | None] = Counter()
    for _ in range(requests):
        answer = call(base(port))
        assert answer.status == 200, answer
        seen[answer.variant] += 1
    return seen


def in_effect(port: int, weights: str, seconds: float) -> float:
    """Seconds until the router answers with ``weights`` (e.g. ``stable=50,canary=50``), every answer a 200; fails
    past ``seconds``."""
    start = time.monotonic()
    while True:
        answer = call(base(port))
        assert answer.status == 200, answer
        if answer.weights == weights:
            return time.monotonic() - start
        assert time.monotonic() - start < seconds, f"{weights} not in effect after {seconds} s (still {answer.weights})"
        time.sleep(0.05)


def routing(port: int, weights: str, seconds: float) -> None:
    """Wait until the router routes by ``weights``: after a start it answers 503 until its own probe (every second)
    has seen a variant ready, which may be a moment after Docker's healthcheck did."""
    deadline = time.monotonic() + seconds
    while ((answer := call(base(port))).status, answer.weights) != (200, weights):
        assert time.monotonic() < deadline, f"not routing by {weights} after {seconds} s: {answer}"
        time.sleep(0.2)
