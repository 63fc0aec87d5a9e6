"""A constant-rate client for the e2e tests and the demo: one new connection per request, no retries.

Each request's outcome is kept (when it was sent, its status, the variant that answered and the
router configuration that routed it), so a test can assert on every single one.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]  # a setosa: class 0
IRIS_BODY = json.dumps({"instances": [IRIS_ROW]}).encode()
# A flower of each class in turn, as real traffic mixes them (a model may fail only some of them).
IRIS_MIX = tuple(
    json.dumps({"instances": [row]}).encode() for row in (IRIS_ROW, [6.4, 3.2, 4.5, 1.5], [6.7, 3.0, 5.2, 2.3])
)


@dataclass(frozen=True)
class Result:
    sent: float  # time.monotonic() when the request was sent
    status: int  # 0: no HTTP response (connection refused, reset, timeout)
    variant: str | None
    config: str | None
    body: bytes = b""
    error: str | None = None
    weights: str | None = None  # the weights the router pod that routed it had (X-Router-Weights)


def call(
    base: str, headers: Mapping[str, str] | None = None, path: str = "/predict", body: bytes = IRIS_BODY
) -> Result:
    """POST ``body`` to ``base + path`` on a new connection."""
    url = urlsplit(base)
    sent = time.monotonic()
    conn = http.client.HTTPConnection(url.hostname or "", url.port or 80, timeout=10)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json", **(headers or {})})
        reply = conn.getresponse()
        data = reply.read()
        variant, config = reply.getheader("X-Model-Variant"), reply.getheader("X-Router-Config")
        return Result(sent, reply.status, variant, config, data, weights=reply.getheader("X-Router-Weights"))
    except (OSError, http.client.HTTPException) as err:
        return Result(sent, 0, None, None, error=f"{type(err).__name__}: {err}")
    finally:
        conn.close()


@dataclass
class Load:
    """Requests sent at a constant rate in the background until stopped."""

    base: str
    rate: float
    bodies: tuple[bytes, ...] = (IRIS_BODY,)  # sent in turn
    results: list[Result] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with ThreadPoolExecutor(max_workers=32) as pool:
            start, n = time.monotonic(), 0
            while not self._stop.is_set():
                delay = start + n / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                pool.submit(self._send, self.bodies[n % len(self.bodies)])
                n += 1

    def _send(self, body: bytes) -> None:
        self.results.append(call(self.base, body=body))

    def since(self, t: float) -> list[Result]:
        return [r for r in list(self.results) if r.sent >= t]


@contextmanager
def constant_load(base: str, rate: float, bodies: tuple[bytes, ...] = (IRIS_BODY,)) -> Iterator[Load]:
    """Send ``rate`` requests per second to ``base`` for the duration of the block, ``bodies`` in turn."""
    load = Load(base, rate, bodies)
    thread = threading.Thread(target=load.run, daemon=True)
    thread.start()
    try:
        yield load
    finally:
        load._stop.set()
        thread.join(30)


def burst(base: str, n: int, headers: Mapping[str, str] | None = None, workers: int = 8) -> list[Result]:
    """``n`` requests as fast as ``workers`` threads can send them."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda _: call(base, headers), range(n)))


def summary(results: list[Result]) -> str:
    """How many of ``results`` failed, when (seconds after the first was sent), and the first few."""
    failed = [r for r in results if r.status != 200]
    start = min((r.sent for r in results), default=0.0)
    when = sorted({round(r.sent - start, 1) for r in failed})
    return f"{len(failed)} of {len(results)} requests failed, at +{when} s, e.g. {failed[:3]}"


def shares(results: list[Result]) -> dict[str, float]:
    """Each variant's share of the answers, in percent."""
    counts = Counter(r.variant for r in results)
    return {str(name): 100 * count / len(results) for name, count in counts.items()}
