"""A token bucket for the operator's own API requests (client-go's default limiter, in small). Pure but
for ``Limiter``, which sleeps."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass
class Bucket:
    """``qps`` requests a second on average, up to ``burst`` at once after a quiet spell."""

    qps: float
    burst: int
    tokens: float = 0.0
    stamp: float | None = None

    def take(self, now: float) -> float:
        """Take a token for a request at ``now``: the seconds to wait before sending it (0: at once)."""
        if self.stamp is None:
            self.tokens, self.stamp = float(self.burst), now
        self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.qps)
        self.stamp = now
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / self.qps


class Limiter:
    """A ``Bucket`` shared by threads: ``wait`` blocks until the caller may send its request."""

    def __init__(self, qps: float, burst: int) -> None:
        self._bucket = Bucket(qps, burst)
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            delay = self._bucket.take(time.monotonic())
        if delay:
            time.sleep(delay)
