"""What a ModelDeployment and its children report: conditions, settled status, rollouts, the router's config."""

from __future__ import annotations

from typing import Any

from mlmodel_operator import names

from mlmodel_testing.cluster import Cluster


def condition(cluster: Cluster, namespace: str, name: str, kind: str) -> dict[str, Any] | None:
    """The condition ``kind`` of ModelDeployment ``name``, if it has one."""
    md = cluster.get("modeldeployments", name, namespace=namespace)
    return next((c for c in (md.get("status") or {}).get("conditions") or [] if c["type"] == kind), None)


def is_true(cluster: Cluster, namespace: str, name: str, kind: str) -> dict[str, Any] | None:
    """The condition ``kind`` if it is True, else None."""
    found = condition(cluster, namespace, name, kind)
    return found if found and found["status"] == "True" else None


def snapshot(cluster: Cluster, namespace: str, name: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]], bool]:
    """One read of ModelDeployment ``name``: its status, its conditions by type, and whether the status
    has observed the latest generation (separate reads could straddle a pass)."""
    found = cluster.get("modeldeployments", name, namespace=namespace)
    status = found.get("status") or {}
    current = status.get("observedGeneration") == found["metadata"]["generation"]
    return status, {c["type"]: c for c in status.get("conditions") or []}, current


def settled(cluster: Cluster, namespace: str, name: str = "iris") -> dict[str, Any] | None:
    """The status once the operator has acted on the latest spec, every variant is ready and the router rolled out."""
    status, conditions, current = snapshot(cluster, namespace, name)
    ready, progressing = conditions.get("Ready", {}), conditions.get("Progressing", {})
    return status if current and ready.get("status") == "True" and progressing.get("status") == "False" else None


def wait_settled(cluster: Cluster, namespace: str, timeout: float = 240) -> dict[str, Any]:
    """The status of ModelDeployment iris once settled."""
    result: dict[str, Any] = cluster.wait_until("iris to settle", lambda: settled(cluster, namespace), timeout)
    return result


def rolled_out(cluster: Cluster, namespace: str, name: str) -> bool:
    """Every pod of Deployment ``name`` runs its latest template and is ready; none is left from before."""
    found = cluster.get("deployments", name, namespace=namespace)
    want, got = found["spec"]["replicas"], found.get("status") or {}
    counts = [got.get(k, 0) for k in ("replicas", "updatedReplicas", "readyReplicas")]
    return (
        got.get("observedGeneration") == found["metadata"]["generation"]
        and counts == [want] * 3
        and not got.get("terminatingReplicas")
    )


def router_digest(cluster: Cluster, namespace: str) -> str:
    """The configuration the router runs now, as its responses name it (16 hex digits)."""
    deployment = cluster.get("deployments", names.router("iris"), namespace=namespace)
    return str(deployment["spec"]["template"]["metadata"]["annotations"][names.ANNOTATION_ROUTER_CONFIG])[:16]


def router_pods(cluster: Cluster, namespace: str) -> list[str]:
    """The router pods that serve: running and not being deleted (a pod of an earlier rollout can
    linger a moment after nginx exited, with no address to reach)."""
    selector = "app.kubernetes.io/component=router"
    pods = cluster.get("pods", namespace=namespace, selector=selector)["items"]
    return [
        p["metadata"]["name"]
        for p in pods
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]


def event_messages(cluster: Cluster, namespace: str, reason: str, name: str = "iris") -> list[str]:
    """The messages of the Events with ``reason`` about ModelDeployment ``name``."""
    events = cluster.get("events", namespace=namespace, fields=f"reason={reason}")
    return [e["message"] for e in events["items"] if e["involvedObject"]["name"] == name]
