"""How traffic is split across variants. Pure: a spec in, plain values out.

Until the weighted router lands, the entry Service selects only the highest-weighted
variant (the first one on a tie), and the status says so.
"""

from __future__ import annotations

from mlmodel_operator.spec import ModelDeployment, Variant


def primary(md: ModelDeployment) -> Variant:
    """The variant that takes the entry Service's traffic."""
    return max(md.variants, key=lambda v: v.weight)  # max keeps the first of equals


def weights(md: ModelDeployment) -> str:
    """``stable=90,canary=10``, for the printer column."""
    return ",".join(f"{v.name}={v.weight}" for v in md.variants)


def routing_note(md: ModelDeployment) -> str:
    """How traffic is routed today, for ``status.routing``."""
    target = primary(md)
    if len(md.variants) == 1:
        return f"all traffic goes to {target.name}"
    return (
        f"weighted routing is not available yet: the entry Service sends all traffic to {target.name} "
        f"(weight {target.weight}); the other variants are reachable through their own Services"
    )
