"""``python -m mlmodel_operator``: parse settings, then run kopf with the handlers."""

from __future__ import annotations

import os
from collections.abc import Sequence

import kopf

from mlmodel_operator import config


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: one replica, standalone (see README: a Recreate Deployment, no peering)."""
    cfg = config.parse(argv)
    # The handlers module reads its settings from the environment when kopf imports it.
    os.environ.update(
        SERVER_IMAGE=cfg.server_image,
        ROUTER_IMAGE=cfg.router_image,
        RESYNC_SECONDS=str(cfg.resync_seconds),
        METRICS_PORT=str(cfg.metrics_port),
    )
    kopf.configure(log_format=kopf.LogFormat.JSON if cfg.json_logs else kopf.LogFormat.FULL)
    from mlmodel_operator import handlers  # noqa: F401 - registers the handlers

    kopf.run(
        standalone=True,
        clusterwide=not cfg.namespaces,
        namespaces=cfg.namespaces,
        liveness_endpoint=cfg.liveness,
    )


if __name__ == "__main__":
    main()
