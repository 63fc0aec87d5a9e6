"""What a rollout's analysis reads over the network: every router pod's ``/metrics`` (its admin port) and a
Prometheus instant query. Thin: ``analysis`` makes sense of the numbers, ``rollout`` decides with them.

A pod or a Prometheus that does not answer within ``TIMEOUT_SECONDS`` is left out of the reading (its answers
then count in no interval, or the query has no value): the interval is judged on what could be read.
"""

from __future__ import annotations

import json
import logging
import math
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mlmodel_operator import analysis, names
from mlmodel_operator.spec import Prometheus

LOG = logging.getLogger(__name__)
TIMEOUT_SECONDS = 2.0
_READERS = 8  # router pods read at once


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as answer:
        return bytes(answer.read())


def _read(pod: Mapping[str, Any]) -> tuple[str, dict[str, analysis.Tally] | None]:
    name, ip = pod["metadata"]["name"], pod["status"]["podIP"]
    host = f"[{ip}]" if ":" in ip else ip
    try:
        return name, analysis.parse(_get(f"http://{host}:{names.ROUTER_ADMIN_PORT}/metrics").decode())
    except (OSError, ValueError) as err:
        LOG.warning("cannot read the metrics of router pod %s: %s", name, err)
        return name, None


def routers(pods: Iterable[Mapping[str, Any]]) -> analysis.Snapshot:
    """The counts of every router pod in ``pods`` that has an IP and answers (one shutting down too: it serves
    until it has drained)."""
    running = [p for p in pods if (p.get("status") or {}).get("podIP")]
    if not running:
        return {}
    with ThreadPoolExecutor(min(_READERS, len(running))) as readers:
        return {name: counts for name, counts in readers.map(_read, running) if counts is not None}


def _number(text: str) -> float | None:
    value = float(text)
    return None if math.isnan(value) else value


def query(prometheus: Prometheus) -> float | None:
    """The value of ``prometheus.query`` now: its scalar, or its only sample; ``None`` if there is none or
    Prometheus cannot be read."""
    url = f"{prometheus.address}/api/v1/query?" + urllib.parse.urlencode({"query": prometheus.query})
    try:
        data = json.loads(_get(url))["data"]
        if data["resultType"] == "scalar":
            return _number(data["result"][1])
        if data["resultType"] == "vector" and len(data["result"]) == 1:
            return _number(data["result"][0]["value"][1])
        LOG.warning("the query %r has %d samples, not one", prometheus.query, len(data["result"]))
    except (OSError, ValueError, KeyError, TypeError) as err:
        LOG.warning("cannot query Prometheus at %s: %s", prometheus.address, err)
    return None
