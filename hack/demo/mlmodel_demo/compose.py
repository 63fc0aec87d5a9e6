"""``make demo-compose``: the canary example without a cluster, under Docker Compose.

The iris models trained into the project's directory (``.demo-compose/models``), a copy of
``manifests/examples/iris-canary-compose.yaml`` rendered there with Prometheus by ``mlmodel compose render``, then
``docker compose up --wait``; predictions through the router, each naming the variant that answered; the weights
moved 90/10 -> 50/50 -> 0/100 -> 90/10, once by ``mlmodel compose set-weight`` and the other times as a user
would, by editing the copy, rendering it again and ``docker compose up -d``; after each move, ``REQUESTS``
predictions and the split they saw. The project is left running; ``down`` removes it.

Compose is driven by ``mlmodel_testing.compose`` (the pinned ``.venv/bin/docker-compose`` on the Docker engine
that ``make images`` starts), as the e2e tests drive it; ``tests/e2e/test_demo_compose_e2e.py`` runs this demo.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml
from mlmodel_operator import names
from mlmodel_operator.compose import WEIGHTS_FILE
from mlmodel_operator.router import traffic
from mlmodel_testing.cluster import REPO, run
from mlmodel_testing.compose import COMPOSE, EXAMPLE, MLMODEL, PROMETHEUS_IMAGE, Project, base, in_effect, routing
from mlmodel_testing.prometheus import get, query

from mlmodel_demo.canary import CANARY, MD, STABLE, observe, predictions
from mlmodel_demo.report import Split, split_table
from mlmodel_demo.steps import StepFailed, Steps, make

PROJECT = "mlmodel-demo"  # the Compose project's name (the example's own is its metadata.name, iris)
STATE = REPO / ".demo-compose"  # the project's directory: compose.yaml, what it mounts, the models, the logs
PORT = 8080  # the router's, on 127.0.0.1
PROMETHEUS_PORT = 9090
REQUESTS = 200  # after each move
TRAIN = REPO / "server" / "examples" / "train_models.py"
MODELS = ("iris", "iris-v2")  # the example's
# The moves after the example's 90/10: the weights, and whether set-weight makes them (else an edit and a render).
MOVES = (({STABLE: 50, CANARY: 50}, False), ({STABLE: 0, CANARY: 100}, True), ({STABLE: 90, CANARY: 10}, False))
EFFECT_SECONDS = 30  # a move not in effect by then fails the demo (the router re-reads its weights every second)
SCRAPE_SECONDS = 60  # Prometheus scrapes every 5 s
CURL_ROW = [6.7, 3.0, 5.2, 2.3]  # a virginica


@dataclass(frozen=True)
class Demo:
    """Where the demo runs: its directory, Compose project name and ports."""

    state: Path = STATE
    name: str = PROJECT
    port: int = PORT
    prometheus_port: int = PROMETHEUS_PORT

    @property
    def project(self) -> Project:
        return Project(self.state, self.name, self.port, self.prometheus_port)

    @property
    def spec(self) -> Path:
        """The user's copy of the example, edited by the moves."""
        return self.state / EXAMPLE.name

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def router(self) -> str:
        return base(self.port)

    @property
    def prometheus(self) -> str:
        return base(self.prometheus_port)


def steps_for(demo: Demo) -> Steps:
    """Progress lines, and a log per step in the project's ``logs/``."""
    demo.logs.mkdir(parents=True, exist_ok=True)
    return Steps(workdir=demo.logs)


def shown(path: Path) -> str:
    """``path`` as a user in the repository's root would type it."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def with_weights(text: str, weights: Mapping[str, int]) -> str:
    """The ModelDeployment ``text`` with each variant's ``weight:`` line set as in ``weights``, the rest as written
    (comments too), as a user edits the file."""
    lines: list[str] = []
    variant: str | None = None
    edited: set[str] = set()
    for line in text.splitlines(keepends=True):
        named = re.match(r"\s*- name: ([\w-]+)\s*$", line)
        variant = str(named[1]) if named else variant
        weight = re.match(r"(\s+weight: )\d+(\s*)$", line)
        if weight and variant is not None and variant in weights:
            line = f"{weight[1]}{weights[variant]}{weight[2]}"
            edited.add(variant)
        lines.append(line)
    out = "".join(lines)
    parsed = {v["name"]: v.get("weight") for v in yaml.safe_load(out)["spec"]["variants"]}
    if edited != set(weights) or any(parsed[name] != weight for name, weight in weights.items()):
        raise ValueError(f"could not set the weights {traffic.weights(weights)}: the variants' weights are {parsed}")
    return out


def port_taken(port: int, address: str = "127.0.0.1") -> bool:
    """Something listens on ``address:port`` (a socket left in TIME_WAIT does not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
            s.listen()
        except OSError:
            return True
    return False


def published(name: str) -> set[int]:
    """The host ports that Compose project ``name``'s running containers publish (none when Docker is not up)."""
    label = f"label=com.docker.compose.project={name}"
    done = run(["docker", "ps", "--filter", label, "--format", "{{.Ports}}"], check=False)
    return {int(port) for port in re.findall(r":(\d+)->", done.stdout)} if done.returncode == 0 else set()


def taken_message(port: int, what: str, option: str) -> str:
    """Why the demo cannot start: ``port`` is another program's."""
    return (
        f"127.0.0.1:{port} is taken: something on this host listens on port {port}, where the demo's {what} would "
        f"(`ss -ltnp 'sport = :{port}'` names it). Stop it, or run the demo on another port: "
        f"make demo-compose {option}={port + 1}"
    )


def check_ports(demo: Demo) -> str:
    """The router's and Prometheus's ports are free, or this demo's own (it is up already)."""
    ours = published(demo.name)
    wanted = (
        (demo.port, "router", "DEMO_COMPOSE_PORT"),
        (demo.prometheus_port, "Prometheus", "DEMO_COMPOSE_PROMETHEUS_PORT"),
    )
    for port, what, option in wanted:
        if port not in ours and port_taken(port):
            raise StepFailed(taken_message(port, what, option))
    return "this demo's already" if ours >= {demo.port, demo.prometheus_port} else "free"


def train(demo: Demo, steps: Steps) -> None:
    """iris and iris-v2 into the project's ``models/`` (``train_models.py``, byte for byte the example's)."""
    out = demo.state / "models"
    argv = [sys.executable, str(TRAIN), "--out", str(out), *(a for m in MODELS for a in ("--only", m))]
    with steps.command("models", f"the example models {', '.join(MODELS)}, trained into {shown(out)}", argv) as step:
        expected = {
            Path(v["modelUri"]).stem: v["modelSha256"] for v in yaml.safe_load(EXAMPLE.read_text())["spec"]["variants"]
        }
        for name, sha in expected.items():
            found = hashlib.sha256((out / f"{name}.joblib").read_bytes()).hexdigest()
            if found != sha:
                raise StepFailed(f"{name}.joblib's sha256 is {found}, not the example's {sha}")
        step.note = ", ".join(f"{name} sha256 {sha[:12]}" for name, sha in expected.items()) + " (the example's)"


def render(demo: Demo, steps: Steps) -> str:
    """``mlmodel compose render`` of the user's copy, with Prometheus, into the project's directory: the weights
    it wrote for the router."""
    said = demo.project.render(demo.spec)
    if steps.log:
        steps.log.write(f"$ {' '.join(render_argv(demo))}\n{said}")
    parsed = traffic.parse_document((demo.state / WEIGHTS_FILE).read_text())
    if parsed is None:
        raise StepFailed("mlmodel compose render wrote no weights document")
    return str(traffic.weights(parsed[1].weights))


def render_argv(demo: Demo) -> list[str]:
    """The render, as a user runs it from the repository's root (the flags ``Project.render`` gives)."""
    argv = [shown(MLMODEL), "compose", "render", shown(demo.spec), "-o", shown(demo.project.file)]
    argv += ["--with-prometheus", "--prometheus-image", PROMETHEUS_IMAGE]
    if demo.port != PORT:
        argv += ["--port", str(demo.port)]
    if demo.prometheus_port != PROMETHEUS_PORT:
        argv += ["--prometheus-port", str(demo.prometheus_port)]
    return argv


def set_weight_argv(demo: Demo, weights: Mapping[str, int]) -> list[str]:
    """``mlmodel compose set-weight`` of the project, as a user runs it from the repository's root."""
    pairs = [f"{name}={weight}" for name, weight in weights.items()]
    return [shown(MLMODEL), "compose", "set-weight", shown(demo.project.file), *pairs]


def compose_argv(demo: Demo, *args: str) -> list[str]:
    """``docker compose`` of the project, as a user runs it from the repository's root."""
    return [shown(COMPOSE), "-p", demo.name, "-f", shown(demo.project.file), *args]


def compose(demo: Demo, steps: Steps, *args: str, timeout: float = 300) -> str:
    """``docker compose ARGS`` of the project, into the step's log."""
    said = demo.project.compose(*args, timeout=timeout)
    if steps.log:
        steps.log.write(f"$ {' '.join(compose_argv(demo, *args))}\n{said}")
    return said


def move(demo: Demo, steps: Steps, weights: Mapping[str, int], set_weight: bool) -> Split:
    """Move the weights (``mlmodel compose set-weight``, or an edit of the user's copy, a render and ``up -d``),
    wait until the router answers by them, then ``REQUESTS`` predictions: what they saw."""
    wanted = traffic.weights(weights)
    how = "mlmodel compose set-weight" if set_weight else f"an edit of {demo.spec.name}, render, up -d"
    with steps.step(f"weights-{weights[STABLE]}-{weights[CANARY]}", f"{wanted} by {how}; {REQUESTS} requests") as step:
        started = time.monotonic()
        if set_weight:
            argv = set_weight_argv(demo, weights)
            done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
            step.log.write(f"$ {' '.join(argv)}\n{done.stdout}{done.stderr}")
            if done.returncode != 0:
                raise StepFailed(f"{' '.join(argv)} exited with {done.returncode}")
        else:
            demo.spec.write_text(with_weights(demo.spec.read_text(), weights))
            step.log.write(f"{shown(demo.spec)}: the weights edited to {wanted}\n")
            render(demo, steps)
            compose(demo, steps, "up", "-d", "--wait", "--wait-timeout", "60")
        in_effect(demo.port, wanted, EFFECT_SECONDS)
        split = observe(demo.router, weights[CANARY], time.monotonic() - started, REQUESTS)
        counts = ", ".join(f"{name} {split.counts.get(name, 0)}" for name in weights)
        step.note = f"in effect after {split.effect_seconds:.1f}s; {counts}" + (
            f", {split.failed} failed" if split.failed else ""
        )
    return split


def scraped(demo: Demo) -> str:
    """Prometheus scrapes the router and both servers, with the chart's alerts on the variants loaded."""
    targets = 1 + len(MODELS)
    deadline = time.monotonic() + SCRAPE_SECONDS
    while len(up := query(demo.prometheus, "up == 1")) < targets:
        if time.monotonic() > deadline:
            raise StepFailed(f"Prometheus scrapes {len(up)} of {targets} targets after {SCRAPE_SECONDS} s: {up}")
        time.sleep(1)
    groups = json.loads(get(f"{demo.prometheus}/api/v1/rules"))["data"]["groups"]
    rules = sum(len(group["rules"]) for group in groups)
    return f"{len(up)} targets up (the router and both servers), the chart's {rules} alerts on the variants loaded"


def up(demo: Demo, images: bool = True) -> list[Split]:
    """The demo, from the images to the last move; it is left running. The splits seen after the moves."""
    steps = steps_for(demo)
    with steps.step("ports", f"ports 127.0.0.1:{demo.port} (router) and :{demo.prometheus_port} (Prometheus)") as step:
        step.note = check_ports(demo)
    if images:  # make images starts the Docker engine if it must, and builds only when no cluster is up
        steps.run(
            "images", "the Docker engine and images (make images)", [*make("images"), "IMAGES_FLAGS=--no-examples"]
        )
    train(demo, steps)
    with steps.step("render", f"mlmodel compose render {EXAMPLE.name} --with-prometheus") as step:
        shutil.copyfile(EXAMPLE, demo.spec)  # the user's copy, to edit
        weights = render(demo, steps)
        step.note = f"{shown(demo.project.file)}, weights {weights}"
    with steps.step("up", f"docker compose -p {demo.name} up -d --wait") as step:
        compose(demo, steps, "up", "-d", "--wait", "--wait-timeout", "180")
        routing(demo.port, weights, 10)  # the router's own probe has seen the variants ready too
        services = demo.project.containers()
        step.note = ", ".join(f"{service} {demo.project.health(service)}" for service in services)
    with steps.step("predictions", f"predictions through the router, {demo.router}") as step:
        step.output = predictions(demo.router)
    splits = [move(demo, steps, weights, set_weight) for weights, set_weight in MOVES]
    recreated = {s for s, container in demo.project.containers().items() if services.get(s) != container}
    with steps.step("prometheus", f"Prometheus, {demo.prometheus}") as step:
        step.note = scraped(demo)
    print(f"\nThe split the router served after each move ({REQUESTS} requests, a new connection each):")
    print(split_table(splits, STABLE, CANARY))
    print(f"\n{recreated_line(len(services), sorted(recreated))}\n")
    print(pointers(demo))
    return splits


def recreated_line(containers: int, recreated: list[str]) -> str:
    """Whether a move recreated a container (it should not: the router re-reads its weights file)."""
    if not recreated:
        return (
            f"No container was recreated: the same {containers} containers served throughout, the router re-reading "
            "its weights file every second."
        )
    return f"Recreated by a move: {', '.join(recreated)}."


def pointers(demo: Demo) -> str:
    """Where it runs, and commands to paste."""
    body = json.dumps({"instances": [CURL_ROW]})
    curl = f"curl -si {demo.router}/predict -H 'Content-Type: application/json' -d '{body}'"
    commands = [
        (f"a prediction; {names.HEADER_VARIANT} names the variant that answered", curl),
        ("the same, pinned to the canary", f"{curl} -H '{names.HEADER_VARIANT}: {CANARY}'"),
        (
            "move the weights at once (the router reads them within a second)",
            " ".join(set_weight_argv(demo, {STABLE: 50, CANARY: 50})),
        ),
        (
            f"or edit the weights in {shown(demo.spec)}, render it again and apply it",
            f"{' '.join(render_argv(demo))}\n  {' '.join(compose_argv(demo, 'up', '-d', '--wait'))}",
        ),
        ("the containers, and the router's access log", " ".join(compose_argv(demo, "ps"))),
        ("", " ".join(compose_argv(demo, "logs", "-f", names.router(MD)))),
    ]
    return "\n".join(
        [
            f"It is running: Docker Compose project {demo.name}, in {shown(demo.state)}/.",
            f"  the router   {demo.router}",
            f"  Prometheus   {demo.prometheus}  (the router's requests per variant: "
            "sum by (variant) (rate(mlmodel_router_requests_total[1m])))",
            "Try (paste into a shell in the repository's root):",
            *(f"  # {what}\n  {command}" if what else f"  {command}" for what, command in commands),
            f"Remove it all: {down_command(demo)}",
        ]
    )


def down_command(demo: Demo) -> str:
    """What removes ``demo``: ``make demo-compose-down`` for the default one."""
    if (demo.state, demo.name) == (STATE, PROJECT):
        return "make demo-compose-down"
    script = shown(Path(__file__).resolve().parents[1] / "demo_compose.py")
    return f"{shown(REPO / '.venv' / 'bin' / 'python')} {script} down --project {demo.name} --state {shown(demo.state)}"


def down(demo: Demo) -> None:
    """``docker compose down -v`` of the project; nothing of it left; its directory removed."""
    steps = steps_for(demo)
    with steps.step("down", f"docker compose -p {demo.name} down -v") as step:
        ensure_engine(steps)
        step.log.write(f"$ {' '.join(compose_argv(demo, 'down', '-v', '--remove-orphans', '--timeout', '10'))}\n")
        step.log.write(demo.project.down())
        left = {kind: ids for kind, ids in demo.project.leftovers().items() if ids}
        if left:
            raise StepFailed(f"Docker still has the project's {left}")
        shutil.rmtree(demo.state, ignore_errors=True)
        step.note = f"no container, network or volume left; {shown(demo.state)}/ removed"


def ensure_engine(steps: Steps) -> None:
    """The Docker engine, started as ``make images`` starts it (the harness's ``ensure_docker``) if it is not up:
    a stopped engine keeps the project's containers, which it restarts when it starts."""
    if run(["docker", "info"], check=False, timeout=30).returncode == 0:
        return
    argv = [sys.executable, "-c", "from mlcluster.docker import ensure_docker; ensure_docker()"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "hack" / "cluster")}
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    if steps.log:
        steps.log.write(f"$ (the Docker engine) {' '.join(argv)}\n{done.stdout}{done.stderr}")
    if done.returncode != 0:
        raise StepFailed(f"the Docker engine did not start:\n{done.stdout}{done.stderr}")
