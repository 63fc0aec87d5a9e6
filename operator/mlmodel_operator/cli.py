"""``mlmodel``: a ModelDeployment without a cluster. Thin: reads and writes files; ``compose`` decides.

    mlmodel compose render FILE [-o compose.yaml] [--port 8080] [--with-prometheus] [--strict]
    mlmodel compose set-weight COMPOSE_FILE VARIANT=PERCENT...

``render`` writes the Compose file and the files it mounts beside it; run it again after an edit, then
``docker compose up -d``: a change of weights only rewrites the router's weights file, which the running router
reads within a second. A registry model (``models:/``, ``runs:/``) is pinned as the operator pins it, when
rendering: its file's URL and sha256 go into the Compose file, so ``up`` never follows a moved alias.
``set-weight`` moves the weights of a rendered project in place (until the next render).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mlmodel_operator import compose, mlflow_client, names, pins, registry, schema, setweight, spec
from mlmodel_operator.router import traffic

ALERTS = "alerts.yaml"  # the chart's alert rules as a Prometheus rules file (hack/chart.py writes it)


class CliError(Exception):
    """What the user must fix, in one line."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlmodel", description="A ModelDeployment without a cluster.")
    commands = parser.add_subparsers(dest="command", required=True)
    tool = commands.add_parser("compose", help="run a ModelDeployment with Docker Compose")
    actions = tool.add_subparsers(dest="action", required=True)
    render = actions.add_parser("render", help="write a Compose file (and what it mounts) for a ModelDeployment")
    render.add_argument("file", type=Path, help="the ModelDeployment's YAML")
    render.add_argument("-o", "--output", type=Path, default=Path("compose.yaml"), help="default: ./compose.yaml")
    render.add_argument("--port", type=int, default=8080, help="the router's port on the host (default 8080)")
    render.add_argument("--address", default="127.0.0.1", help="the address it listens on (default 127.0.0.1)")
    render.add_argument("--with-prometheus", action="store_true", help="add Prometheus with the chart's alerts")
    render.add_argument("--prometheus-port", type=int, default=compose.PROMETHEUS_PORT)
    render.add_argument("--prometheus-image", default="prom/prometheus:v3.13.5")
    render.add_argument("--server-image", default=compose.Options.server_image, help="for variants naming none")
    render.add_argument("--router-image", default=compose.Options.router_image)
    render.add_argument("--strict", action="store_true", help="fail on a field Compose cannot honour")
    render.add_argument(
        "--mlflow-tracking-uri",
        help="where registry URIs are resolved, from this host and from the containers: it wins over "
        "spec.mlflow.trackingUri (often a cluster's Service), which wins over MLFLOW_TRACKING_URI",
    )
    weights = actions.add_parser("set-weight", help="move the weights of a rendered project, live")
    weights.add_argument("file", type=Path, help="the Compose file that render wrote")
    weights.add_argument("weights", nargs="+", metavar="VARIANT=PERCENT")
    args = parser.parse_args(argv)
    try:
        if args.action == "render":
            return _render(args)
        return _set_weight(args.file, args.weights)
    except (CliError, spec.SpecError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def load(path: Path) -> dict[str, Any]:
    """The one ModelDeployment in ``path``, as written, if the CRD's schema takes it."""
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    except (OSError, yaml.YAMLError) as err:
        raise CliError(f"{path}: {err}") from None
    found = [d for d in documents if isinstance(d, dict) and d.get("kind") == names.KIND]
    if len(found) != 1:
        raise CliError(f"{path}: holds {len(found)} ModelDeployments, not one")
    (body,) = found
    if body.get("apiVersion") != names.API_VERSION:
        raise CliError(f"{path}: apiVersion: {body.get('apiVersion')!r}, not {names.API_VERSION}")
    if not isinstance((body.get("metadata") or {}).get("name"), str):
        raise CliError(f"{path}: metadata.name: Required value")
    refused = schema.errors(body)
    with contextlib.suppress(TypeError, AttributeError, KeyError, ValueError):  # where the schema's types fail
        refused += schema.rules(body)
    if refused:
        raise CliError(f"{path}: the CRD's schema refuses it:\n  " + "\n  ".join(refused))
    return body


def pinned(body: dict[str, Any], md: spec.ModelDeployment, tracking_uri: str | None) -> dict[str, Any]:
    """``body`` with its registry models (``md.registered``) pinned on the tracking server, as the operator pins them
    (credentials: MLflow's own MLFLOW_TRACKING_TOKEN, or _USERNAME and _PASSWORD; an S3 store's AWS_* keys)."""
    env = os.environ
    tracking = tracking_uri or md.mlflow.tracking_uri or env.get("MLFLOW_TRACKING_URI")
    if tracking is None:
        raise CliError(
            "spec.mlflow.trackingUri: unset, and no --mlflow-tracking-uri or MLFLOW_TRACKING_URI: where are the "
            "registry models?"
        )
    found = {}
    try:
        credentials = _credentials(env)
    except registry.RegistryError as err:
        raise CliError(f"{err.reason}: {err.message}") from None
    for variant in md.registered:
        assert variant.ref is not None
        try:
            pin = mlflow_client.resolve(variant.ref, tracking, credentials, timeout=10.0, digests={})
        except registry.RegistryError as err:
            raise CliError(f"variant {variant.name}: {err.reason}: {err.message}") from None
        print(f"{variant.name}: {pin.describe()} (sha256 {pin.sha256[:12]}…)", file=sys.stderr)
        found[variant.name] = pin
    return pins.pinned_body(body, found, None)


def _credentials(env: Mapping[str, str]) -> registry.Credentials | None:
    """MLflow's own credentials in ``env``, and the AWS SDK's S3 keys (its region: AWS_REGION, else
    AWS_DEFAULT_REGION)."""
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or ""
    s3 = registry.s3_keys({**env, names.S3_REGION: region}, "the environment")
    if env.get("MLFLOW_TRACKING_TOKEN") or env.get("MLFLOW_TRACKING_USERNAME"):
        return registry.Credentials(
            token=env.get("MLFLOW_TRACKING_TOKEN"),
            username=env.get("MLFLOW_TRACKING_USERNAME"),
            password=env.get("MLFLOW_TRACKING_PASSWORD"),
            s3=s3,
        )
    return None if s3 is None else registry.Credentials(s3=s3)


def _render(args: argparse.Namespace) -> int:
    body = load(args.file)
    md = spec.parse(body, default_image=args.server_image)
    if md.registered:  # parsed again, pinned
        md = spec.parse(pinned(body, md, args.mlflow_tracking_uri), default_image=args.server_image)
    out: Path = args.output
    directory = out.parent
    weights_file = directory / compose.WEIGHTS_FILE
    options = compose.Options(
        server_image=args.server_image,
        router_image=args.router_image,
        address=args.address,
        port=args.port,
        prometheus_image=args.prometheus_image if args.with_prometheus else None,
        prometheus_port=args.prometheus_port,
    )
    alerts = resources.files("mlmodel_operator").joinpath(ALERTS).read_text() if args.with_prometheus else None
    project = compose.project(md, options, _read(weights_file), alerts)
    for line in project.dropped:
        print(f"{'error' if args.strict else 'warning'}: {line}", file=sys.stderr)
    if args.strict and project.dropped:
        return 2
    for name, text in project.files.items():
        _write(directory / name, text)
    _write(out, compose.dump(project.document))
    print(f"wrote {out} ({traffic.weights(project.weights)})")
    return 0


def _set_weight(file: Path, pairs: list[str]) -> int:
    weights_file = file.parent / compose.WEIGHTS_FILE
    parsed = traffic.parse_document(_read(weights_file) or "")
    if parsed is None:
        raise CliError(f"{weights_file}: no weights: render the project first")
    serial, routes = parsed
    try:
        moved = setweight.moved(routes.weights, pairs)
    except setweight.WeightError as err:
        raise CliError(f"{file}: {err}") from None
    _write(weights_file, traffic.routing_document(dataclasses.replace(routes, weights=moved), serial + 1))
    print(f"{file}: {traffic.weights(moved)}")
    return 0


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _write(path: Path, text: str) -> None:
    """``text`` into ``path`` at once (a rename): the router never reads half a weights file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.{os.getpid()}")
    staged.write_text(text)
    staged.chmod(0o644)
    staged.replace(path)


if __name__ == "__main__":
    sys.exit(main())
