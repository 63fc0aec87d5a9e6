"""Why the server cannot serve, where Kubernetes shows it: the container's termination message."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from mlmodel_server.errors import ModelLoadError

log = logging.getLogger("mlmodel_server")

TERMINATION_LOG = Path(os.environ.get("TERMINATION_LOG", "/dev/termination-log"))


def report_load_failure(error: ModelLoadError) -> None:
    """Log why the model cannot be served, and leave it in the pod's termination message."""
    log.error(error.message, extra={"fields": {"code": error.code}})
    if TERMINATION_LOG.exists():
        with contextlib.suppress(OSError):  # not writable: the log line above says it all
            TERMINATION_LOG.write_text(f"{error.code}: {error.message}\n")
