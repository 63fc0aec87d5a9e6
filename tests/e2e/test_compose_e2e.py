"""The README's canary without a cluster: ``mlmodel compose render`` of ``iris-canary-compose.yaml`` run by the
pinned Docker Compose on the harness's Docker engine, with the images ``make images`` built (the server, the router,
and Prometheus with the chart's alerts). Real containers throughout; ``mlmodel_testing.compose`` drives them."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mlmodel_demo.compose import with_weights as edited
from mlmodel_testing.cluster import REPO, free_port
from mlmodel_testing.compose import EXAMPLE, Project, base, in_effect, routing, split
from mlmodel_testing.load import call, constant_load, summary
from mlmodel_testing.prometheus import get, query

ALERTS = re.findall(r"(?m)^  - alert: (\w+)$", (REPO / "operator/mlmodel_operator/alerts.yaml").read_text())


def with_weights(directory: Path, stable: int, canary: int, canary_sha256: str | None = None) -> Path:
    """The example with other weights, edited as a user edits it (and the canary's digest): a file of its own in
    ``directory``."""
    text = edited(EXAMPLE.read_text(), {"stable": stable, "canary": canary})
    if canary_sha256 is not None:
        found = re.findall(r'modelSha256: "([0-9a-f]{64})"', text)
        text = text.replace(found[1], canary_sha256)
    path = directory / f"iris-{stable}-{canary}.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def project(tmp_path: Path, images: None, models: Path, call_failed: Callable[[], bool]) -> Iterator[Project]:
    """The example's project in a directory of its own, with the example models in its ``models/``; taken down
    after the test (its logs printed if the test failed)."""
    directory = tmp_path / "iris"
    (directory / "models").mkdir(parents=True)
    for name in ("iris.joblib", "iris-v2.joblib"):
        shutil.copy(models / name, directory / "models" / name)
    project = Project(directory, f"mlmodel-e2e-{tmp_path.name[-12:].lower()}", free_port(), free_port())
    try:
        yield project
        if call_failed():
            print(f"\n===== the Compose project's logs =====\n{project.logs()}")
    finally:
        project.down()
        shutil.rmtree(directory, ignore_errors=True)


def test_the_canary_example_under_compose_splits_moves_without_a_failed_request_and_is_scraped(
    project: Project, tmp_path: Path
) -> None:
    """Acceptance 1, 2, 4 and 5 of issue 27: every service healthy; 2,000 requests split 90/10 within ±3 points,
    each naming its variant; 50/50 then 0/100 by a render and ``up -d`` under 20 requests a second on new
    connections: 0 failed, each split in effect within 5 s, no container recreated; Prometheus has the router's
    requests of both variants; ``down -v`` leaves no container, network or volume."""
    said = project.render(EXAMPLE)
    assert "spec." not in said, said  # nothing of this spec is lost in Compose
    project.compose("up", "-d", "--wait", "--wait-timeout", "180")
    ids = project.containers()
    assert set(ids) == {"iris-stable", "iris-canary", "iris-router", "prometheus"}, ids
    assert {service: project.health(service) for service in ids} == {
        "iris-stable": "healthy",
        "iris-canary": "healthy",
        "iris-router": "healthy",
        "prometheus": "running",  # it has no healthcheck: running is what --wait waits for
    }

    routing(project.port, "stable=90,canary=10", seconds=10)
    seen = split(project.port, 2000)
    assert set(seen) == {"stable", "canary"}, seen  # every answer named its variant
    assert abs(seen["canary"] / 2000 - 0.10) <= 0.03, seen

    with constant_load(base(project.port), rate=20) as load:
        for stable, canary in ((50, 50), (0, 100)):
            project.render(with_weights(tmp_path, stable, canary))
            project.compose("up", "-d", "--wait", "--wait-timeout", "60")
            assert in_effect(project.port, f"stable={stable},canary={canary}", seconds=5) < 5
            seen = split(project.port, 200)
            assert abs(seen["canary"] / 200 - canary / 100) <= 0.1, (stable, canary, seen)
        after = len(load.results) + 20  # a second more of load after the last move
        deadline = time.monotonic() + 10
        while len(load.results) < after:
            assert time.monotonic() < deadline, summary(load.results)
            time.sleep(0.1)
    assert len(load.results) >= 20, summary(load.results)
    assert not [r for r in load.results if r.status != 200], summary(load.results)
    assert project.containers() == ids  # no container was recreated

    prometheus = base(project.prometheus_port)
    deadline = time.monotonic() + 60
    while True:
        found = query(prometheus, "sum by (variant) (rate(mlmodel_router_requests_total[1m]))")
        variants = {series["metric"].get("variant") for series in found}
        if {"stable", "canary"} <= variants:
            break
        assert time.monotonic() < deadline, f"Prometheus has the router's requests of {variants} only"
        time.sleep(2)
    groups = json.loads(get(f"{prometheus}/api/v1/rules"))["data"]["groups"]
    loaded = sorted(rule["name"] for group in groups for rule in group["rules"])
    assert loaded == sorted(ALERTS) and len(loaded) == 5, loaded  # the chart's alerts on the variants, every one
    # The router probes its variants itself: no address counts as unreached, so that alert cannot fire here.
    unreached = query(prometheus, "max(mlmodel_router_addresses_unreached)")
    assert unreached and float(unreached[0]["value"][1]) == 0, unreached

    project.down()
    assert project.leftovers() == {"containers": [], "networks": [], "volumes": []}


def test_a_canary_with_a_wrong_digest_is_unhealthy_says_why_and_gets_no_traffic(
    project: Project, tmp_path: Path
) -> None:
    """Acceptance 3 of issue 27: the canary's server refuses the model before loading it (its log says the digest
    does not match) and is never healthy; the router sends the canary's 10 % to the stable variant."""
    project.render(with_weights(tmp_path, 90, 10, canary_sha256="0" * 64))
    project.compose("up", "-d")
    deadline = time.monotonic() + 120
    while project.health("iris-stable") != "healthy" or "sha256 mismatch" not in project.logs("iris-canary"):
        assert time.monotonic() < deadline, project.logs()
        time.sleep(1)
    routing(project.port, "stable=100,canary=0", seconds=10)
    assert split(project.port, 300) == {"stable": 300}
    assert project.health("iris-canary") != "healthy"
    assert call(base(project.port)).status == 200
