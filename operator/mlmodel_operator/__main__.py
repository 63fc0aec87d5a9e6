"""``python -m mlmodel_operator``: parse settings, then run kopf with the handlers (once leading)."""

from __future__ import annotations

import contextlib
import http.server
import signal
import socket
import sys
import threading
import uuid
from collections.abc import Iterator, Sequence
from urllib.parse import urlsplit

import kopf
from prometheus_client import start_http_server

from mlmodel_operator import config, kube, leader, metrics


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point. With ``--leader-election``, stand by until this replica holds the Lease, keep
    renewing it while kopf runs, stop when it is lost (exit 1, to restart as a standby), and
    release it on a clean stop so that a standby takes over at once."""
    cfg = config.parse(argv)
    kube.configure(cfg)
    kopf.configure(log_format=kopf.LogFormat.JSON if cfg.json_logs else kopf.LogFormat.FULL)
    from mlmodel_operator import handlers  # noqa: F401 - registers the handlers

    if cfg.metrics_port:  # a standby serves its metrics too (mlmodel_operator_leader 0)
        start_http_server(cfg.metrics_port)
    stop, lost = threading.Event(), threading.Event()

    @kopf.on.cleanup(id="stop-flag")
    def _stopping(**_: object) -> None:
        """kopf waits for ``stop`` in a thread of its executor, and joins that thread as it exits:
        when it stops by itself (SIGTERM), ``stop`` must be set too, or the process hangs."""
        stop.set()

    elector = None
    if cfg.leader_election:
        elector = leader.Elector(cfg.lease_namespace, cfg.lease_name, f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}")
        # As PID 1 a standby would ignore SIGTERM (no handler until kopf's); stop at once instead.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        with _healthy_while_standing_by(cfg.liveness):
            elector.acquire()
    metrics.LEADER.set(1)
    if elector is not None:
        threading.Thread(target=elector.keep, args=(lost, stop), name="lease", daemon=True).start()

    try:
        kopf.run(
            standalone=True,
            clusterwide=not cfg.namespaces,
            namespaces=cfg.namespaces,
            liveness_endpoint=cfg.liveness,
            stop_flag=stop,
            memo=kopf.Memo(config=cfg),  # the handlers' settings: handlers.startup reads them
        )
    finally:
        stop.set()
        metrics.LEADER.set(0)
        if elector is not None and not lost.is_set():
            elector.release()
    if lost.is_set():
        sys.exit(1)


@contextlib.contextmanager
def _healthy_while_standing_by(endpoint: str | None) -> Iterator[None]:
    """Answer the liveness probe (kopf's endpoint, not up yet) while this replica waits for the Lease."""
    if not endpoint:
        yield
        return
    url = urlsplit(endpoint)

    class Standby(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = self.path == (url.path or "/")
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"standby": true}' if found else b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((url.hostname or "0.0.0.0", url.port or 80), Standby)
    threading.Thread(target=server.serve_forever, name="standby-health", daemon=True).start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    main()
