"""Operator settings, from flags or the environment."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlmodel_operator import quantity
from mlmodel_operator.netpol import Access
from mlmodel_operator.spec import DEFAULT_ROUTER_RESOURCES, DEFAULT_SERVER_RESOURCES, Defaults

CONNECT_SECONDS = 10.0  # at most, for the TCP and TLS handshakes of one API call
# Prometheus in the namespace `monitoring` scrapes servers and routers (the chart's networkPolicy.metricsFrom).
METRICS_FROM = '[{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]'
# What a default of a container's resources (--server-resources, --router-resources) may name: what a model
# server or a router uses. (A variant's own resources may name any resource the API server takes.)
RESOURCE_KINDS = ("requests", "limits")
RESOURCE_NAMES = ("cpu", "memory", "ephemeral-storage")


@dataclass(frozen=True)
class Registry:
    """Where a ``models:/`` or ``runs:/`` modelUri is resolved (the chart's ``mlflow``), unless a ModelDeployment's
    ``spec.mlflow`` says otherwise, and how often its alias is looked up again."""

    tracking_uri: str | None = None
    poll_seconds: float = 30.0


@dataclass(frozen=True)
class Config:
    namespaces: tuple[str, ...]  # empty: every namespace
    server_image: str
    router_image: str
    resync_seconds: float
    api_qps: float
    api_burst: int
    workers: int
    api_timeout_seconds: float
    stall_seconds: float
    watch_seconds: int
    liveness: str | None
    metrics_port: int
    json_logs: bool
    leader_election: bool
    lease_namespace: str
    lease_name: str
    access: Access | None  # who may reach a ModelDeployment's pods besides its router; None: no NetworkPolicy
    weights_port: int = 0  # serve the routers' weights here (0: not at all)
    weights_address: str | None = None  # host:port where routers reach that port (the operator's Service)
    registry: Registry = Registry()
    defaults: Defaults = field(default_factory=Defaults)  # the resources of servers and routers whose spec sets none

    @property
    def api_timeouts(self) -> tuple[float, float]:
        """(connect, read) seconds of one API call."""
        return min(CONNECT_SECONDS, self.api_timeout_seconds), self.api_timeout_seconds


def _peers(text: str) -> tuple[dict[str, Any], ...]:
    """A JSON list of NetworkPolicy peers, each an object."""
    try:
        peers = json.loads(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not JSON: {err}") from err
    if not isinstance(peers, list) or not all(isinstance(p, dict) and p for p in peers):  # [] : nobody
        raise argparse.ArgumentTypeError("not a JSON list of NetworkPolicy peers (objects)")
    return tuple(peers)


def _resources(text: str) -> dict[str, Any]:
    """A container's ``resources`` as JSON: ``requests`` and ``limits`` of cpu, memory or ephemeral-storage, each a
    Quantity as the CRD takes one (a string such as 500m or 256Mi, or an integer), and no request above its limit."""
    try:
        resources = json.loads(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not JSON: {err}") from err
    if not isinstance(resources, dict):
        raise argparse.ArgumentTypeError(f"not a JSON object of requests and limits: {text}")
    for kind, values in resources.items():
        if kind not in RESOURCE_KINDS:
            raise argparse.ArgumentTypeError(f"unknown key {kind!r}: a container's resources are requests and limits")
        if not isinstance(values, dict):
            raise argparse.ArgumentTypeError(f"{kind}: not an object of quantities by resource name: {values!r}")
        for name, value in values.items():
            if name not in RESOURCE_NAMES:
                known = ", ".join(RESOURCE_NAMES)
                raise argparse.ArgumentTypeError(f"{kind}: unknown resource {name!r}, not one of {known}")
            if not isinstance(value, str | int) or quantity.parse(value) is None:
                raise argparse.ArgumentTypeError(f"{kind}.{name}: not a quantity such as 500m, 2 or 256Mi: {value!r}")
    if not any(resources.values()):
        raise argparse.ArgumentTypeError("no request nor limit (unset, the operator's built-in defaults apply)")
    name = quantity.over_limit(resources)
    if name is not None:
        requested, limit = resources["requests"][name], resources["limits"][name]
        raise argparse.ArgumentTypeError(f"requests.{name} ({requested}) exceeds limits.{name} ({limit})")
    return resources


def parse(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Flags win over environment variables, which win over defaults."""
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(prog="mlmodel-operator", description="Reconcile ModelDeployments.")
    parser.add_argument(
        "--namespace",
        action="append",
        dest="namespaces",
        help="watch this namespace (repeatable; default: all) [WATCH_NAMESPACES, comma-separated]",
    )
    parser.add_argument(
        "--server-image",
        default=env.get("SERVER_IMAGE", "mlmodel-server:0.1.0"),
        help="image for variants that name none [SERVER_IMAGE]",
    )
    parser.add_argument(
        "--router-image",
        default=env.get("ROUTER_IMAGE", "mlmodel-router:0.1.0"),
        help="image of the routers: nginx with the Lua module (Dockerfile.router) [ROUTER_IMAGE]",
    )
    parser.add_argument(
        "--resync-seconds",
        type=float,
        default=float(env.get("RESYNC_SECONDS", "300")),
        help="how often every ModelDeployment is checked in full, besides on every change the watches see "
        "[RESYNC_SECONDS]",
    )
    parser.add_argument(
        "--api-qps",
        type=float,
        default=float(env.get("API_QPS", "200")),
        help="the operator's own API requests per second, on average [API_QPS]",
    )
    parser.add_argument(
        "--api-burst",
        type=int,
        default=int(env.get("API_BURST", "400")),
        help="how many of them may go at once [API_BURST]",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=int(env.get("WORKERS", "4")),
        help="passes run at once (of different ModelDeployments) [WORKERS]",
    )
    parser.add_argument(
        "--api-timeout-seconds",
        type=float,
        default=float(env.get("API_TIMEOUT_SECONDS", "30")),
        help="longest wait for the API server's answer to one call, and for its handshakes"
        f" (at most {CONNECT_SECONDS:g} s) [API_TIMEOUT_SECONDS]",
    )
    parser.add_argument(
        "--stall-seconds",
        type=float,
        default=float(env["STALL_SECONDS"]) if env.get("STALL_SECONDS") else None,
        help="the liveness probe fails once no reconcile pass has finished for this long"
        " (default: 2 resync periods plus 60 s) [STALL_SECONDS]",
    )
    parser.add_argument(
        "--watch-seconds",
        type=int,
        default=int(env.get("WATCH_SECONDS", "60")),
        help="how long the API server keeps each of the operator's watches open; a watch that shows no"
        " progress for longer (plus the API timeout and 10 s) fails the liveness probe [WATCH_SECONDS]",
    )
    parser.add_argument(
        "--liveness",
        default=env.get("LIVENESS_ENDPOINT"),
        help="serve kopf's liveness probe here, e.g. http://0.0.0.0:8080/healthz [LIVENESS_ENDPOINT]",
    )
    parser.add_argument(
        "--metrics-port", type=int, default=int(env.get("METRICS_PORT", "9090")), help="Prometheus port [METRICS_PORT]"
    )
    parser.add_argument(
        "--log-format",
        choices=["json", "plain"],
        default=env.get("LOG_FORMAT", "json"),
        help="log format [LOG_FORMAT]",
    )
    parser.add_argument(
        "--leader-election",
        action=argparse.BooleanOptionalAction,
        default=env.get("LEADER_ELECTION", "false").lower() == "true",
        help="run as one of several replicas: only the holder of a Lease reconciles [LEADER_ELECTION]",
    )
    parser.add_argument(
        "--leader-election-namespace",
        default=env.get("POD_NAMESPACE", "default"),
        help="namespace of the Lease [POD_NAMESPACE]",
    )
    parser.add_argument(
        "--leader-election-id",
        default=env.get("LEADER_ELECTION_ID", "mlmodel-operator"),
        help="name of the Lease [LEADER_ELECTION_ID]",
    )
    parser.add_argument(
        "--network-policies",
        action=argparse.BooleanOptionalAction,
        default=env.get("NETWORK_POLICIES", "true").lower() == "true",
        help="give each ModelDeployment NetworkPolicies: its servers reached only from its router and from"
        " --metrics-from, the router's admin port only from --metrics-from [NETWORK_POLICIES]",
    )
    parser.add_argument(
        "--metrics-from",
        type=_peers,
        default=env.get("METRICS_FROM", METRICS_FROM),
        help="a JSON list of NetworkPolicy peers (namespaceSelector, podSelector, ipBlock) that may scrape"
        f" the servers and routers (default: {METRICS_FROM}) [METRICS_FROM]",
    )
    parser.add_argument(
        "--operator-from",
        type=_peers,
        default=env.get("OPERATOR_FROM", "[]"),
        help="a JSON list of NetworkPolicy peers that select this operator's pods: routers let them read their"
        " metrics, which a rollout's analysis judges by (default: none) [OPERATOR_FROM]",
    )
    parser.add_argument(
        "--weights-port",
        type=int,
        default=int(env.get("WEIGHTS_PORT", "0")),
        help="serve the routers' live weights on this port (0: not at all; routers then follow only their"
        " weights ConfigMap, which kubelet refreshes within a minute or so) [WEIGHTS_PORT]",
    )
    parser.add_argument(
        "--weights-address",
        default=env.get("WEIGHTS_ADDRESS") or None,
        help="host:port where routers reach the weights port, e.g. the operator's Service"
        " mlmodel-operator.mlmodel-system.svc:8082 [WEIGHTS_ADDRESS]",
    )
    parser.add_argument(
        "--mlflow-tracking-uri",
        default=env.get("MLFLOW_TRACKING_URI") or None,
        help="the MLflow tracking server that resolves models:/ and runs:/ model URIs, e.g. http://mlflow.mlflow:5000"
        " (a ModelDeployment's spec.mlflow.trackingUri wins) [MLFLOW_TRACKING_URI]",
    )
    parser.add_argument(
        "--mlflow-poll-seconds",
        type=float,
        default=float(env.get("MLFLOW_POLL_SECONDS", "30")),
        help="how often a registry model's alias (or version) is looked up again, one request per ModelDeployment"
        " variant [MLFLOW_POLL_SECONDS]",
    )
    parser.add_argument(
        "--server-resources",
        type=_resources,
        default=env.get("MLMODEL_SERVER_RESOURCES") or None,
        help="the resources of every model server container whose variant sets none, as JSON: requests and limits"
        ' of cpu, memory and ephemeral-storage, e.g. \'{"requests": {"cpu": "250m", "memory": "512Mi"}}\''
        f" (default: {json.dumps(DEFAULT_SERVER_RESOURCES)}) [MLMODEL_SERVER_RESOURCES]",
    )
    parser.add_argument(
        "--router-resources",
        type=_resources,
        default=env.get("MLMODEL_ROUTER_RESOURCES") or None,
        help="the resources of every router container whose ModelDeployment sets no spec.routing.resources, as JSON"
        f" (default: {json.dumps(DEFAULT_ROUTER_RESOURCES)}) [MLMODEL_ROUTER_RESOURCES]",
    )
    args = parser.parse_args(argv)
    namespaces = args.namespaces or [n.strip() for n in env.get("WATCH_NAMESPACES", "").split(",") if n.strip()]
    return Config(
        namespaces=tuple(namespaces),
        server_image=args.server_image,
        router_image=args.router_image,
        resync_seconds=args.resync_seconds,
        api_qps=args.api_qps,
        api_burst=args.api_burst,
        workers=args.workers,
        api_timeout_seconds=args.api_timeout_seconds,
        stall_seconds=args.stall_seconds if args.stall_seconds is not None else 2 * args.resync_seconds + 60,
        watch_seconds=args.watch_seconds,
        liveness=args.liveness,
        metrics_port=args.metrics_port,
        json_logs=args.log_format == "json",
        leader_election=args.leader_election,
        access=Access(args.metrics_from, args.operator_from) if args.network_policies else None,
        lease_namespace=args.leader_election_namespace,
        lease_name=args.leader_election_id,
        weights_port=args.weights_port,
        weights_address=args.weights_address,
        registry=Registry(args.mlflow_tracking_uri, args.mlflow_poll_seconds),
        defaults=Defaults(
            server_resources=args.server_resources or DEFAULT_SERVER_RESOURCES,
            router_resources=args.router_resources or DEFAULT_ROUTER_RESOURCES,
        ),
    )
