"""Liveness that means something: the operator is live while its resync loop keeps finishing passes.

kopf's endpoint answers as long as its event loop runs, which says nothing of a pass stuck on a
lock or on an API server that stopped answering. The resync loop records its progress here: a pass
that finished without an error, or a round with nothing to pass over (an idle operator is live).
A pass that failed is no progress: with every API call timed out, a frozen connection to the API
server fails every pass, so the probe fails too. ``check`` decides; kopf's endpoint answers 500
while it raises.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Stalled(Exception):
    """No progress for longer than the limit."""


class Progress:
    """When the resync loop last made progress, on ``clock`` (monotonic); it starts as progress."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.last = clock()

    def beat(self) -> None:
        self.last = self.clock()

    def idle(self) -> float:
        """Seconds since the last progress."""
        return self.clock() - self.last


def check(idle: float, limit: float) -> dict[str, float]:
    """The probe's answer after ``idle`` seconds without progress; ``Stalled`` from ``limit`` seconds on."""
    if idle >= limit:
        raise Stalled(f"no reconcile pass has finished for {idle:.1f} s (the limit is {limit:g} s)")
    return {"idleSeconds": round(idle, 1), "limitSeconds": limit}
