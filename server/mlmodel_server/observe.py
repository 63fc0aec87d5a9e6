"""Every request's id, headers, metrics and access-log line: WSGI middleware around the Flask app.

Flask's ``before_request`` and ``after_request`` hooks, and the ``g`` and ``request`` proxies
they read, cost a cheap model more than the model itself; here the same work is a few dict
lookups on the WSGI environ and one wrapped ``start_response``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from mlmodel_server.config import Settings
from mlmodel_server.logs import AccessLog
from mlmodel_server.metrics import Metrics

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

access_log = AccessLog(logging.getLogger("mlmodel_server.access"))

REQUEST_ID = "mlmodel.request_id"  # environ keys: the request's id,
ROUTE = "mlmodel.route"  # and its (rule, method, path), from Flask's request or from the lane


def new_request_id() -> str:
    """A random id, without a system call (``random`` is reseeded in every forked worker)."""
    return f"{random.getrandbits(128):032x}"


class Observed:
    """``app`` with the request id (the client's ``X-Request-Id``, else a new one), the model's
    headers, the request metrics and one access-log line on every response."""

    def __init__(self, app: WSGIApplication, settings: Settings, metrics: Metrics) -> None:
        self._app = app
        self._model = settings.model_name
        self._variant = settings.variant
        self._headers = [("X-Model-Name", settings.model_name), ("X-Model-Variant", settings.variant)]
        self._metrics = metrics
        self._requests: dict[tuple[str, str], Any] = {}  # (endpoint, status) -> counter child
        self._latency: dict[str, Any] = {}  # endpoint -> histogram child

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        request_id = environ.get("HTTP_X_REQUEST_ID") or new_request_id()
        environ[REQUEST_ID] = request_id
        status = "500"

        def start(line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            nonlocal status
            status = line[:3]
            headers += self._headers
            headers.append(("X-Request-Id", request_id))
            return start_response(line, headers, exc_info)

        body = self._app(environ, start)
        elapsed = time.perf_counter() - started
        endpoint, method, path = environ.pop(ROUTE, None) or (
            "unmatched",
            environ.get("REQUEST_METHOD"),
            environ.get("PATH_INFO"),
        )
        self._count(endpoint, status, elapsed)
        access_log.request(
            {
                "request_id": request_id,
                "method": method,
                "path": path,
                "status": int(status),
                "duration_ms": round(elapsed * 1000, 3),
                "model": self._model,
                "variant": self._variant,
            }
        )
        return body

    def _count(self, endpoint: str, status: str, elapsed: float) -> None:
        requests = self._requests.get((endpoint, status))
        if requests is None:
            requests = self._requests[endpoint, status] = self._metrics.requests.labels(endpoint, status, self._variant)
        latency = self._latency.get(endpoint)
        if latency is None:
            latency = self._latency[endpoint] = self._metrics.latency.labels(endpoint, self._variant)
        requests.inc()
        latency.observe(elapsed)
