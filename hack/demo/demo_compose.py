"""``make demo-compose`` and ``make demo-compose-down``, in the virtualenv: the canary example without a cluster.

``up``: the Docker engine and the images (``make images``), the iris models trained into ``.demo-compose/``,
``manifests/examples/iris-canary-compose.yaml`` rendered there with Prometheus and run by Docker Compose, then live:
predictions, and the weights moved 90/10 -> 50/50 -> 0/100 -> 90/10 with the split seen after each. It is left
running, the router on 127.0.0.1:8080 and Prometheus on 127.0.0.1:9090. ``down``: ``docker compose down -v``,
nothing of it left, and ``.demo-compose/`` removed. Each step prints one progress line and logs to
``.demo-compose/logs/<step>.log``; the work is ``mlmodel_demo.compose``'s.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mlmodel_demo import compose


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("up", help="run the demo and leave it running (`make demo-compose`)")
    start.add_argument("--port", type=int, default=compose.PORT, help="the router's on 127.0.0.1 (default %(default)s)")
    start.add_argument("--prometheus-port", type=int, default=compose.PROMETHEUS_PORT, help="default %(default)s")
    start.add_argument("--no-images", action="store_true", help="skip `make images`: they are built")
    stop = sub.add_parser("down", help="remove it all (`make demo-compose-down`)")
    for command in (start, stop):
        command.add_argument("--project", default=compose.PROJECT, help="the Compose project (default %(default)s)")
        command.add_argument("--state", type=Path, default=compose.STATE, help="its directory (default .demo-compose)")
    args = parser.parse_args()
    if args.command == "up":
        demo = compose.Demo(args.state.resolve(), args.project, args.port, args.prometheus_port)
        compose.up(demo, images=not args.no_images)
    else:
        compose.down(compose.Demo(args.state.resolve(), args.project))


if __name__ == "__main__":
    main()
