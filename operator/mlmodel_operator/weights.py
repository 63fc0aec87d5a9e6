"""The weights endpoint: routers long-poll the operator for their routes (weights, variants' addresses, mirror),
so that a change reaches every router pod within a second of the pass that decided it, with no restart and no
reload.

``GET /v1/weights/<namespace>/<name>?serial=N&wait=S&pod=P&reached=R`` answers the ModelDeployment's routing
document (``traffic.routing_document``) as soon as its serial is not ``N``, or after ``S`` seconds (at most
``MAX_WAIT``) with the same one; 404 if the operator still has none for it then (a replica that has not passed
it yet, a ModelDeployment without a router). It serves only what passes publish to the ``Board``: the weights
ConfigMap they applied, which new router pods read at start. Each poll also reports: router pod ``P`` routes by
serial ``N``, and reaches every address in it if ``R`` is 1. A pass waits for every router pod's report before
it deletes a variant the routers routed to (or gives a new one all traffic), and a report that brings a pod up
to date calls the Board's ``listener``: a pass follows.

A router asks the operator rather than the API server: it needs no token, no RBAC and no route to the API
server, and the operator hears nothing but what it already knows. Nothing here is writable.
"""

from __future__ import annotations

import http.server
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from mlmodel_operator import cache, names
from mlmodel_operator.router import traffic

LOG = logging.getLogger(__name__)
MAX_WAIT = 30.0
MAX_WAITING = 1024  # polls held at once; one more is a 503, and its router tries again a second later
_PATH = re.compile(rf"^{re.escape(names.WEIGHTS_PATH)}/([a-z0-9-]+)/([a-z0-9-]+)$")


class Board:
    """The routing document of every routed ModelDeployment, as the last pass applied it (a poll waits on it),
    and what each router pod last reported."""

    def __init__(self, listener: Callable[[cache.Owner], None] | None = None) -> None:
        self._changed = threading.Condition()
        self._documents: dict[cache.Owner, tuple[str, int | None]] = {}  # the document, and its serial
        self._reports: dict[cache.Owner, dict[str, tuple[int, bool]]] = {}  # pod -> (serial, reaches every address)
        self._listener = listener

    def publish(self, owner: cache.Owner, document: str | None) -> None:
        """``owner``'s weights are now ``document`` (``None``: it has none, no router or deleted)."""
        with self._changed:
            if self._documents.get(owner, (None,))[0] == document:
                return
            if document is None:
                self._documents.pop(owner, None)
                self._reports.pop(owner, None)
            else:
                parsed = traffic.parse_document(document)
                self._documents[owner] = (document, parsed[0] if parsed else None)
            self._changed.notify_all()

    def report(self, owner: cache.Owner, pod: str, serial: int, reached: bool) -> None:
        """Router pod ``pod`` of ``owner`` routes by ``serial``, reaching every address in it or not; the listener
        hears of it when that brings the pod up to date."""
        with self._changed:
            before = self._reports.setdefault(owner, {}).get(pod)
            self._reports[owner][pod] = (serial, reached)
            current = self._documents.get(owner, (None, None))[1]
        if self._listener is not None and before != (serial, reached) and (serial, reached) == (current, True):
            self._listener(owner)

    def reports(self, owner: cache.Owner) -> dict[str, tuple[int, bool]]:
        """What each router pod of ``owner`` last reported: its serial, and whether it reaches every address."""
        with self._changed:
            return dict(self._reports.get(owner, {}))

    def wait(self, owner: cache.Owner, serial: int, seconds: float) -> str | None:
        """``owner``'s document once it has one whose serial is not ``serial``, or after ``seconds`` (then ``None``
        if it has none)."""
        deadline = time.monotonic() + seconds
        with self._changed:
            while True:
                document, current = self._documents.get(owner, (None, None))
                left = deadline - time.monotonic()
                if (document is not None and current != serial) or left <= 0:
                    return document
                self._changed.wait(left)


def resolve(address: str) -> tuple[str, int]:
    """``host:port`` (the operator's Service, as routers should reach it) as an IP address and a port: a
    router's nginx has no resolver, and a Service's ClusterIP lives as long as the release."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"weights address {address!r} is not host:port")
    sockaddr = socket.getaddrinfo(host.strip("[]"), int(port), proto=socket.IPPROTO_TCP)[0][4]
    return str(sockaddr[0]), int(port)


class Endpoint(http.server.ThreadingHTTPServer):
    """A threaded HTTP server whose listen backlog holds every router's poll: when the weights move, all held polls
    are answered at once and their routers connect again together (socketserver's backlog of 5 would drop
    their SYNs, and a dropped SYN is retried after the routers' 1 s connect timeout)."""

    daemon_threads = True
    request_queue_size = MAX_WAITING


def server(board: Board, port: int, host: str = "0.0.0.0") -> Endpoint:
    """The endpoint on ``host:port`` (not started: ``serve_forever`` it in a thread)."""
    slots = threading.BoundedSemaphore(MAX_WAITING)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            found = _PATH.match(url.path)
            query = parse_qs(url.query)
            try:
                serial = int(query.get("serial", ["-1"])[0])
                wait = min(MAX_WAIT, max(0.0, float(query.get("wait", ["0"])[0])))
            except ValueError:
                self._json(400, "serial must be an integer and wait a number of seconds")
                return
            if found is None:
                self._json(404, f"not found: GET {names.WEIGHTS_PATH}/<namespace>/<name>")
                return
            pod = query.get("pod", [""])[0]
            if pod:
                board.report((found[1], found[2]), pod, serial, query.get("reached", ["0"])[0] == "1")
            if not slots.acquire(blocking=False):
                self._json(503, f"too many polls held at once (over {MAX_WAITING})")
                return
            try:
                document = board.wait((found[1], found[2]), serial, wait)
            finally:
                slots.release()
            if document is None:
                self._json(404, f"no weights for {found[1]}/{found[2]} here")
                return
            self._send(200, "text/plain; charset=utf-8", document.encode())

        def _json(self, code: int, message: str) -> None:
            self._send(code, "application/json", json.dumps({"error": message}).encode())

        def _send(self, code: int, content_type: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Endpoint((host, port), Handler)
