"""The NetworkPolicies of a ModelDeployment: a server takes connections only from its router (and from
monitoring), the router's admin port only from monitoring and the operator (a rollout's analysis reads it).
Pure: ``reconcile`` applies what this renders.

While the entry Service leads straight to the servers (a single-variant ModelDeployment has no router, and one
that gains a router keeps its entry there until the router serves), the servers' port stays open to every client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlmodel_operator import names, render
from mlmodel_operator.spec import ModelDeployment

Obj = dict[str, Any]


@dataclass(frozen=True)
class Access:
    """Who, besides the router, may reach a ModelDeployment's pods: NetworkPolicy peers that may scrape
    metrics (the chart's ``networkPolicy.metricsFrom``), and those of the operator's pods, which read the
    routers' metrics for a rollout's analysis."""

    metrics_from: tuple[Obj, ...]
    operator_from: tuple[Obj, ...] = ()


def _port(number: int) -> Obj:
    return {"protocol": "TCP", "port": number}


def _policy(md: ModelDeployment, name: str, selector: dict[str, str], ingress: list[Obj]) -> Obj:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": render.metadata(md, name, {**names.owned_labels(md.name), names.LABEL_PART_OF: "mlmodel"}),
        "spec": {"podSelector": {"matchLabels": selector}, "policyTypes": ["Ingress"], "ingress": ingress},
    }


def _from(peers: tuple[Obj, ...], ports: list[Obj]) -> list[Obj]:
    """The rule that lets ``peers`` in; none without peers (a rule with no ``from`` would let everyone in)."""
    return [{"from": [dict(peer) for peer in peers], "ports": ports}] if peers else []


def network_policies(md: ModelDeployment, access: Access, behind_router: bool) -> list[Obj]:
    """The servers' policy (only the router may call them if ``behind_router``), and the router's if it has one."""
    server_port = [_port(names.SERVER_PORT)]
    if not behind_router:
        servers = [{"ports": server_port}]
    else:
        router = {"podSelector": {"matchLabels": names.router_selector(md.name)}}
        servers = [{"from": [router], "ports": server_port}, *_from(access.metrics_from, server_port)]
    policies = [_policy(md, names.server_policy(md.name), names.selector(md.name), servers)]
    if md.routed:
        admin = [_port(names.ROUTER_ADMIN_PORT)]
        ingress = [{"ports": [_port(names.ROUTER_PORT)]}, *_from(access.metrics_from + access.operator_from, admin)]
        policies.append(_policy(md, names.router(md.name), names.router_selector(md.name), ingress))
    return policies
