"""Locust load test: users posting one iris row at a time to ``/predict``.

Each request is counted under the variant that answered it (the server's ``X-Model-Variant``):
``/predict stable``, ``/predict canary``; ``/predict -`` when no variant is named (no answer, or
the router had no ready variant). ``make load`` runs it against the demo's canary and prints
each variant's counts and latency percentiles. Against one server of your own (ours, or
``bench/naive_app.py``), headless for 60 seconds with 50 users, 10 new users a second::

    .venv/bin/locust -f bench/locustfile.py --host http://127.0.0.1:8080 \\
        --headless --users 50 --spawn-rate 10 --run-time 60s

Drop ``--headless`` for the web UI on http://127.0.0.1:8089. Locust's users are
Python greenlets: one Locust process tops out at roughly a thousand requests a
second, so for the numbers in the README use ``bench/run.py`` (wrk) instead.
"""

from __future__ import annotations

import random
from typing import Any, cast

from locust import HttpUser, between, task

# Real rows of the iris data set, one per class.
IRIS_ROWS = [
    [5.1, 3.5, 1.4, 0.2],
    [7.0, 3.2, 4.7, 1.4],
    [6.3, 3.3, 6.0, 2.5],
]

NAME_PREFIX = "/predict "  # + the variant


class PredictUser(HttpUser):
    """Posts one row, then thinks for 0-100 ms."""

    wait_time = between(0.0, 0.1)

    @task
    def predict(self) -> None:
        row = random.choice(IRIS_ROWS)
        with self.client.post("/predict", json={"features": [row]}, catch_response=True) as response:
            meta = cast(dict[str, Any], response.request_meta)  # a dict, reported when the block ends
            meta["name"] = f"{NAME_PREFIX}{response.headers.get('X-Model-Variant', '-')}"
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
            elif len(response.json().get("predictions", [])) != 1:
                response.failure(f"expected one prediction, got {response.text[:200]}")
