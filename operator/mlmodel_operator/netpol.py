"""The NetworkPolicies of a ModelDeployment: a server takes connections only from its router (and from
monitoring), the router's admin port only from monitoring. Pure: ``reconcile`` applies what this renders.

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
    metrics (the chart's ``networkPolicy.metricsFrom``)."""

    metrics_from: tuple[Obj, ...]


def _port(number: int) -> Obj:
    return {"protocol": "TCP", "port": number}


def _policy(md: ModelDeployment, name: str, selector: dict[str, str], ingress: list[Obj]) -> Obj:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": render.metadata(md, name, {**names.owned_labels(md.name), names.LABEL_PART_OF: "mlmodel"}),
        "spec": {"podSelector": {"matchLabels": selector}, "policyTypes": ["Ingress"], "ingress": ingress},
    }


def _monitoring(access: Access, ports: list[Obj]) -> list[Obj]:
    """The rule that lets monitoring in; none without peers (a rule with no ``from`` would let everyone in)."""
    return [{"from": [dict(peer) for peer in access.metrics_from], "ports": ports}] if access.metrics_from else []


def network_policies(md: ModelDeployment, access: Access, behind_router: bool) -> list[Obj]:
    """The servers' policy (only the router may call them if ``behind_router``), and the router's if it has one."""
    server_port = [_port(names.SERVER_PORT)]
    if not behind_router:
        servers = [{"ports": server_port}]
    else:
        router = {"podSelector": {"matchLabels": names.router_selector(md.name)}}
        servers = [{"from": [router], "ports": server_port}, *_monitoring(access, server_port)]
    policies = [_policy(md, names.server_policy(md.name), names.selector(md.name), servers)]
    if md.routed:
        ingress = [{"ports": [_port(names.ROUTER_PORT)]}, *_monitoring(access, [_port(names.ROUTER_ADMIN_PORT)])]
        policies.append(_policy(md, names.router(md.name), names.router_selector(md.name), ingress))
    return policies
