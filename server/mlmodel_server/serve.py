"""Run the app under gunicorn: buffering gthread workers (``worker``), the model preloaded or loaded per worker."""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.glogging import Logger
from gunicorn.workers.base import Worker
from prometheus_client import multiprocess

from mlmodel_server import model as model_lib
from mlmodel_server import worker
from mlmodel_server.app import create_app
from mlmodel_server.config import Settings
from mlmodel_server.errors import ModelLoadError
from mlmodel_server.logs import logging_config
from mlmodel_server.serving import Serving
from mlmodel_server.signature import InputSchema
from mlmodel_server.termination import report_load_failure

log = logging.getLogger("mlmodel_server")

WORKER_BOOT_ERROR = Arbiter.WORKER_BOOT_ERROR


class _Logger(Logger):  # type: ignore[misc]
    """gunicorn's logger with no access log: the app writes its own JSON line per request.

    With a logging config given, gunicorn otherwise builds its access atoms on every request
    (about 4 % of a worker's time on a cheap model), only to drop them at level CRITICAL.
    """

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        """Nothing: see the class."""


class ModelServer(BaseApplication):  # type: ignore[misc]
    """gunicorn, configured from ``Settings``; ``model`` is given when preloaded in the master, else each worker
    loads it with ``inputs`` (the parsed ``--input-schema``)."""

    def __init__(
        self,
        settings: Settings,
        path: Path,
        model: model_lib.LoadedModel | None,
        api_keys: tuple[bytes, ...] | None,
        inputs: InputSchema | None = None,
    ) -> None:
        self.settings = settings
        self.path = path
        self.model = model
        self.api_keys = api_keys
        self.inputs = inputs
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        options: dict[str, Any] = {
            "bind": [f"{s.host}:{s.port}"],
            "workers": s.workers,
            "worker_class": worker.buffering(s.max_body_bytes),
            "threads": s.threads,
            "preload_app": s.preload,
            "graceful_timeout": s.graceful_timeout,
            "timeout": 120,
            "keepalive": 75,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": s.log_level,
            "logconfig_dict": logging_config(s.log_level),
            "logger_class": _Logger,
            "control_socket_disable": True,
            "proc_name": f"mlmodel-server {s.model_name}",
            "post_fork": _post_fork,
            "child_exit": _child_exit,
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        app = create_app(self.settings, self.model, api_keys=self.api_keys)
        if self.model is None:
            threading.Thread(target=self._load_in_worker, args=(app,), name="model-loader", daemon=True).start()
        return app

    def _load_in_worker(self, app: Flask) -> None:
        state: Serving = app.extensions["mlmodel"]
        try:
            loaded = model_lib.load(
                self.path,
                source=self.settings.model_uri,
                sha256=self.settings.model_sha256,
                skops_trusted=self.settings.skops_trusted,
                inputs=self.inputs,
            )
            loaded.verify()
        except Exception as err:  # noqa: BLE001 - whatever it is, this worker must not serve
            report_load_failure(err if isinstance(err, ModelLoadError) else ModelLoadError(str(err)))
            os._exit(WORKER_BOOT_ERROR)  # the arbiter halts on a worker that failed to boot
        state.set_model(loaded)
        log.info("model loaded in worker", extra={"fields": {"seconds": round(loaded.load_seconds, 3)}})


def _post_fork(server: Arbiter, worker: Worker) -> None:
    """In each worker: check that a preloaded model predicts, before the worker takes requests.

    Everything inherited from the master is frozen out of the garbage collector first: the
    collector then never walks (and never copies, page by page) the preloaded model and libraries.
    """
    gc.freeze()
    application: ModelServer = server.app
    if application.model is None:
        return
    try:
        application.model.verify()
    except ModelLoadError as err:
        report_load_failure(err)
        sys.exit(WORKER_BOOT_ERROR)


def _child_exit(server: Arbiter, worker: Worker) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
