"""Liveness that means something: the operator is live while its passes finish and its watches go on.

kopf's endpoint answers as long as its event loop runs, which says nothing of a pass stuck on a
lock, a stuck watch, or an API server that stopped answering. Progress is recorded here:
- by passes: one that finished without an error, or a resync round with nothing to pass over (an
  idle operator is live); a pass that failed is no progress;
- by each watch: a list, an event, or the API server ending the watch in time. A frozen
  connection stops all of that, since every call has a timeout.

``check`` decides; kopf's endpoint answers 500 while it raises.
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


def check(ages: dict[str, tuple[float, float]]) -> dict[str, float]:
    """The probe's answer, from each source's seconds without progress and its limit (what -> (idle,
    limit)); ``Stalled``, naming the first source at or over its limit."""
    for what, (idle, limit) in ages.items():
        if idle >= limit:
            raise Stalled(f"{what} has made no progress for {idle:.1f} s (the limit is {limit:g} s)")
    return {what: round(idle, 1) for what, (idle, _) in ages.items()}
