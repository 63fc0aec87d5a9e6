"""The chart's alerts through promtool: ``check rules``, and ``test rules`` with unit tests in
which every alert fires on some series and stays silent on others."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import find, render, tool

TESTS = Path(__file__).resolve().parent / "rules"


def rules_file() -> dict[str, Any]:
    """The PrometheusRule's spec: a plain Prometheus rules file."""
    (rule,) = find(render("--set", "monitoring.prometheusRule.enabled=true"), "PrometheusRule")
    return rule["spec"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rules")
    (out / "rules.yaml").write_text(yaml.safe_dump(rules_file(), sort_keys=False))
    for test in TESTS.glob("*.test.yaml"):
        shutil.copy(test, out / test.name)
    return out


def promtool(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tool("promtool")), *args], cwd=workdir, capture_output=True, text=True, timeout=120, check=False
    )


def test_check_rules(workdir: Path) -> None:
    result = promtool(workdir, "check", "rules", "rules.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 9 rules found" in result.stdout, result.stdout


def test_unit_tests_pass(workdir: Path) -> None:
    result = promtool(workdir, "test", "rules", *sorted(p.name for p in workdir.glob("*.test.yaml")))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout, result.stdout


def test_every_alert_is_tested_firing_and_silent() -> None:
    """Each alert fires in some case, and none fires for a healthy ModelDeployment."""
    alerts = {r["alert"] for group in rules_file()["groups"] for r in group["rules"]}
    fired: set[str] = set()
    silent: set[str] = set()
    for path in TESTS.glob("*.test.yaml"):
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (fired if case["exp_alerts"] else silent).add(case["alertname"])
    assert fired == alerts, alerts ^ fired
    assert silent == alerts, alerts ^ silent
