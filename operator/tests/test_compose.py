"""``mlmodel compose``: a ModelDeployment rendered for Docker Compose (golden files), the same servers and router
as the operator's from one spec, what Compose cannot honour said on stderr, bad input refused naming the field,
and every example's Compose file accepted by the real ``docker compose config`` (the pinned binary, ``make tools``).
Running the containers is ``tests/e2e/test_compose_e2e.py``'s."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from golden_files import GOLDEN, assert_golden
from mlmodel_operator import cli, compose, names, render, schema, spec
from mlmodel_operator.router import traffic

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "manifests" / "examples"
EXAMPLE = EXAMPLES / "iris-canary-compose.yaml"
DOCKER_COMPOSE = Path(sys.executable).parent / "docker-compose"
REGISTRY_EXAMPLES = {"iris-mlflow.yaml"}  # rendered against a real tracking server: test_mlflow_client.py


def _render(tmp_path: Path, md: Path, *extra: str) -> tuple[int, str, str]:
    """``mlmodel compose render md -o tmp_path/compose.yaml``, in this process: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    unset = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}  # a registry test may set them
    with mock.patch.dict(os.environ, unset, clear=True), redirect_stdout(out), redirect_stderr(err):
        code = cli.main(["compose", "render", str(md), "-o", str(tmp_path / "compose.yaml"), *extra])
    return code, out.getvalue(), err.getvalue()


def _md_file(tmp_path: Path, edit: dict[str, Any] | None = None, **spec_items: Any) -> Path:
    """The example with ``spec_items`` set in its spec (and ``edit`` merged into its first variant: None removes)."""
    body = yaml.safe_load(EXAMPLE.read_text())
    body["spec"].update(spec_items)
    first = body["spec"]["variants"][0]
    for key, value in (edit or {}).items():
        if value is None:
            del first[key]
        else:
            first[key] = value
    path = tmp_path / "md.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def test_the_canary_example_renders_as_the_golden_compose_file_and_router_config(tmp_path: Path) -> None:
    code, out, err = _render(tmp_path, EXAMPLE, "--with-prometheus")
    assert (code, err) == (0, ""), err
    assert out == f"wrote {tmp_path / 'compose.yaml'} (stable=90,canary=10)\n"
    assert_golden(GOLDEN / "compose" / "compose.yaml", (tmp_path / "compose.yaml").read_text())
    for name in (traffic.NGINX_CONF, "prometheus.yml"):
        folder = compose.ROUTER_DIR if name == traffic.NGINX_CONF else compose.PROMETHEUS_DIR
        assert_golden(GOLDEN / "compose" / name, (tmp_path / folder / name).read_text())
    weights = tmp_path / compose.WEIGHTS_FILE
    assert weights.read_text() == "serial 1\nstable 90 iris-stable:8080\ncanary 10 iris-canary:8080\n"
    assert (tmp_path / compose.PROMETHEUS_DIR / "alerts.yml").read_text() == (
        REPO / "operator" / "mlmodel_operator" / cli.ALERTS
    ).read_text()


def test_each_variant_runs_what_the_operator_would_run_from_the_same_spec() -> None:
    """One renderer: the Compose service is the Deployment's container (image, env, user, read-only root, dropped
    capabilities, probe, limits); only a file's path differs, bind-mounted where the server is told to read it."""
    md = spec.parse(yaml.safe_load(EXAMPLE.read_text()), default_image="mlmodel-server:0.1.0")
    project = compose.project(md, compose.Options())
    for variant in md.variants:
        pod = render.deployment(md, variant)["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        service = project.document["services"][names.child(md.name, variant.name)]
        env = {e["name"]: e["value"] for e in container["env"]}
        moved = env.pop(names.ENV_MODEL_URI)
        assert moved == variant.model_uri
        assert service["image"] == container["image"]
        assert {k: v for k, v in service["environment"].items() if k != names.ENV_MODEL_URI} == env
        target = service["environment"][names.ENV_MODEL_URI].removeprefix("file://")
        source = variant.model_uri.removeprefix("file://")
        assert {"type": "bind", "source": source, "target": target, "read_only": True} in service["volumes"]
        assert service["user"] == f"{render.RUN_AS}:{render.RUN_AS}"
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        ready, live = container["readinessProbe"], container["livenessProbe"]
        assert service["healthcheck"]["interval"] == f"{ready['periodSeconds']}s"
        # unhealthy (what `up --wait` gives up on) only once Kubernetes would restart it: 30 s, not 5
        unhealthy_s = service["healthcheck"]["retries"] * ready["periodSeconds"]
        assert unhealthy_s == live["periodSeconds"] * live["failureThreshold"] == 30
        assert service["deploy"]["resources"]["limits"] == {"memory": str(1 << 30)}
        assert service["deploy"]["replicas"] == variant.replicas
    assert project.weights == {"stable": 90, "canary": 10}


def test_a_new_split_is_a_new_weights_file_and_nothing_else(tmp_path: Path) -> None:
    """Rendering again with other weights rewrites only the weights document, with the next serial: the services
    are the same, so ``docker compose up -d`` recreates none, and the router reads the file without a reload."""
    assert _render(tmp_path, EXAMPLE)[0] == 0
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    body = yaml.safe_load(EXAMPLE.read_text())
    body["spec"]["variants"][0]["weight"], body["spec"]["variants"][1]["weight"] = 50, 50
    moved = tmp_path / "moved.yaml"
    moved.write_text(yaml.safe_dump(body))
    assert _render(tmp_path, moved)[0] == 0
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p != moved}
    changed = {p.relative_to(tmp_path).as_posix() for p in after if after[p] != before.get(p)}
    assert changed == {compose.WEIGHTS_FILE}
    parsed = traffic.parse_document((tmp_path / compose.WEIGHTS_FILE).read_text())
    assert parsed is not None and (parsed[0], parsed[1].weights) == (2, {"stable": 50, "canary": 50})


def test_set_weight_moves_a_rendered_project_and_refuses_what_is_no_split(tmp_path: Path) -> None:
    assert _render(tmp_path, EXAMPLE)[0] == 0
    out = tmp_path / "compose.yaml"
    assert cli.main(["compose", "set-weight", str(out), "stable=50", "canary=50"]) == 0
    weights = tmp_path / compose.WEIGHTS_FILE
    assert weights.read_text() == "serial 2\nstable 50 iris-stable:8080\ncanary 50 iris-canary:8080\n"
    for pairs in (["stable=60"], ["shadow=10", "stable=90"], ["stable=x", "canary=50"], ["stable=101", "canary=0"]):
        assert cli.main(["compose", "set-weight", str(out), *pairs]) == 2, pairs
    assert weights.read_text() == "serial 2\nstable 50 iris-stable:8080\ncanary 50 iris-canary:8080\n"


def test_set_weight_says_why_it_cannot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _render(tmp_path, EXAMPLE)[0] == 0
    assert cli.main(["compose", "set-weight", str(tmp_path / "compose.yaml"), "stable=60"]) == 2
    assert "weights must sum to 100, these sum to 70 (stable=60, canary=10)" in capsys.readouterr().err
    assert cli.main(["compose", "set-weight", str(tmp_path / "nowhere" / "compose.yaml"), "stable=60"]) == 2
    assert "no weights: render the project first" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("spec_items", "edit", "said"),
    [
        ({}, {"weight": 80}, "spec.variants[*].weight must sum to 100 (percent of traffic), got 90"),
        ({}, {"modelUri": "ftp://host/m.joblib"}, 'spec.variants[0].modelUri: Invalid value: "ftp://host/m.joblib"'),
        ({}, {"modelURI": "x"}, 'strict decoding error: unknown field "spec.variants[0].modelURI"'),
        ({}, {"weight": 101}, "spec.variants[0].weight: Invalid value: 101"),
        ({}, {"name": "router"}, "spec.variants[0].name: Invalid value: 'router' is reserved"),
        ({}, {"modelUri": "pvc://models/iris.joblib"}, "spec.variants[0].modelUri: a pvc:// URI needs"),
        ({"apiKeySecret": {"name": "keys"}}, None, "spec.apiKeySecret: Compose has no Secrets"),
        ({}, {"modelUri": "models:/iris@champion", "modelSha256": None}, "spec.mlflow.trackingUri: unset"),
        ({}, {"env": [{"name": "MODEL_URI", "value": "x"}]}, "spec.variants[0].env[0].name: MODEL_URI is set by"),
    ],
)
def test_a_bad_model_deployment_is_refused_naming_the_field_and_nothing_is_written(
    tmp_path: Path, spec_items: dict[str, Any], edit: dict[str, Any] | None, said: str
) -> None:
    code, _, err = _render(tmp_path, _md_file(tmp_path, edit, **spec_items))
    assert code == 2 and said in err, err
    assert not (tmp_path / "compose.yaml").exists()


def test_what_compose_cannot_honour_is_said_field_by_field_and_strict_refuses_it(tmp_path: Path) -> None:
    edit = {
        "autoscaling": {"minReplicas": 2, "maxReplicas": 4},
        "resources": {"requests": {"cpu": "500m"}},
        "podAnnotations": {"team": "ml"},
        "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
    }
    md = _md_file(tmp_path, edit, routing={"replicas": 3})
    code, _, err = _render(tmp_path, md)
    assert code == 0
    assert err.splitlines() == [
        "warning: spec.variants[0].autoscaling: Compose does not autoscale; it runs minReplicas (2)",
        "warning: spec.variants[0].podAnnotations: Compose has no pod annotations; left out",
        "warning: spec.variants[0].env[0].valueFrom: Compose has no Secrets or ConfigMaps; TOKEN left out",
        "warning: spec.routing.replicas: one router publishes the host port; 3 asked for",
    ]
    written = yaml.safe_load((tmp_path / "compose.yaml").read_text())
    assert written["services"]["iris-stable"]["deploy"]["replicas"] == 2
    (tmp_path / "compose.yaml").unlink()
    code, _, err = _render(tmp_path, md, "--strict")
    assert code == 2 and err.startswith("error: spec.variants[0].autoscaling"), err
    assert not (tmp_path / "compose.yaml").exists()


def test_a_file_that_is_no_model_deployment_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.yaml"
    other.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    assert "holds 0 ModelDeployments, not one" in _render(tmp_path, other)[2]
    body = yaml.safe_load(EXAMPLE.read_text())
    other.write_text(yaml.safe_dump({**body, "apiVersion": "mlmodel.io/v2"}))
    assert "apiVersion: 'mlmodel.io/v2', not mlmodel.io/v1alpha1" in _render(tmp_path, other)[2]
    other.write_text("spec: [")
    assert _render(tmp_path, other)[0] == 2


def _model_deployments() -> list[Path]:
    return sorted(
        path
        for path in EXAMPLES.glob("*.yaml")
        if any(d and d.get("kind") == names.KIND for d in yaml.safe_load_all(path.read_text()))
    )


@pytest.mark.parametrize("example", [p for p in _model_deployments() if p.name not in REGISTRY_EXAMPLES], ids=str)
def test_every_example_renders_and_docker_compose_accepts_it(tmp_path: Path, example: Path) -> None:
    """Acceptance 6 of issue 27 (the registry's example: ``test_mlflow_client.py``, against a tracking server)."""
    code, _, err = _render(tmp_path, example, "--with-prometheus")
    assert code == 0, err
    config = subprocess.run(
        [str(DOCKER_COMPOSE), "-f", str(tmp_path / "compose.yaml"), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert config.returncode == 0, config.stderr


def test_the_registry_examples_are_those_with_registry_uris() -> None:
    """Every example is rendered by one test or the other."""
    registry = {p.name for p in _model_deployments() if any(s in p.read_text() for s in ("models:/", "runs:/"))}
    assert registry == REGISTRY_EXAMPLES


SAMPLES = Path(__file__).parent / "integration" / "samples"  # what the API server refuses, and takes (test_crd.py)


def _field(fragment: str) -> str:
    """The field an API server's message names first: what precedes its first ': ' (or the fragment)."""
    return fragment.split(": ", 1)[0]


@pytest.mark.parametrize("sample", sorted(yaml.safe_load((SAMPLES / "invalid.yaml").read_text())))
def test_what_the_api_server_refuses_compose_refuses_naming_the_same_field(tmp_path: Path, sample: str) -> None:
    """Each sample the CRD refuses (its schema, or a CEL rule) is refused here too, naming the field the API
    server names (``schema`` checks the schema and the CEL rules' intent, ``spec.parse`` the rest)."""
    fragments: list[str] = yaml.safe_load((SAMPLES / "invalid.yaml").read_text())[sample]
    code, _, err = _render(tmp_path, SAMPLES / "invalid" / f"{sample}.yaml")
    strict = fragments[0].startswith("strict decoding error")  # the API server's own words, field and all
    field = fragments[0] if strict else _field(fragments[0])
    assert field and code == 2 and field in err, (sample, fragments, err)
    assert "Traceback" not in err


@pytest.mark.parametrize("sample", sorted(p.name for p in (SAMPLES / "valid").glob("*.yaml")))
def test_what_the_api_server_takes_the_schema_takes(sample: str) -> None:
    body = yaml.safe_load((SAMPLES / "valid" / sample).read_text())
    assert schema.errors(body) == [] and schema.rules(body) == []
