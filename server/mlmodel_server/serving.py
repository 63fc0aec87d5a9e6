"""What the app, its routes and the lane share: the served model's state, JSON responses, error replies."""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
import orjson
from flask import Response, current_app

from mlmodel_server.auth import KeyFile
from mlmodel_server.batching import COSTLY_CALL_S, Batcher
from mlmodel_server.config import Settings
from mlmodel_server.errors import NotReady, ServerError, body_for, status_for
from mlmodel_server.metrics import Metrics
from mlmodel_server.model import LoadedModel, Prediction
from mlmodel_server.protocol import Schema

log = logging.getLogger("mlmodel_server")

LOAD_WAIT_S = 30.0
"""How long a request that reaches a worker still loading its model waits for it (``--no-preload``)."""


class Serving:
    """Everything a request handler needs: settings, the model once loaded, its batcher, metrics."""

    def __init__(self, settings: Settings, metrics: Metrics, api_keys: tuple[bytes, ...] | None) -> None:
        self.settings = settings
        self.metrics = metrics
        key_file = settings.api_keys_file
        self._keys = api_keys if api_keys is None or key_file is None else KeyFile(key_file, api_keys)
        self.model: LoadedModel | None = None
        self.schema: Schema | None = None
        self.batcher: Batcher | None = None
        self.load_wait_s = LOAD_WAIT_S
        self._loaded = threading.Event()

    @property
    def api_keys(self) -> tuple[bytes, ...] | None:
        """The API keys in force, or None when authentication is off; re-read from ``--api-keys-file``."""
        return self._keys.current() if isinstance(self._keys, KeyFile) else self._keys

    def set_model(self, model: LoadedModel) -> None:
        """Start serving ``model``."""
        variant = self.settings.variant
        self.schema = Schema(
            n_features=model.n_features,
            feature_names=model.feature_names,
            allow_nan=model.allow_nan,
            max_rows=self.settings.max_batch_size,
            has_proba=model.has_proba,
            inputs=model.inputs,
        )
        rows = self.metrics.rows.labels(variant)
        batch_rows = self.metrics.batch_rows.labels(variant)

        def predict(x: np.ndarray, want_proba: bool) -> Prediction:
            prediction = model.predict(x, want_proba=want_proba)
            rows.inc(len(x))
            batch_rows.observe(len(x))
            return prediction

        self.batcher = Batcher(
            predict,
            max_rows=self.settings.max_batch_size,
            max_wait_s=self.settings.max_batch_wait_ms / 1000,
            direct=_cheap(model),
        )
        self.metrics.load_seconds.labels(variant).set(model.load_seconds)
        self.metrics.info.labels(
            self.settings.model_name,
            variant,
            model.sha256,
            model.runtime_sklearn_version,
            model.saved_sklearn_version or "unknown",
        ).set(1)
        self.model = model
        self._loaded.set()

    def ready(self, wait: bool = False) -> tuple[LoadedModel, Schema, Batcher]:
        """The model, its schema and batcher, or ``NotReady`` while it loads.

        With ``wait``, a request waits up to ``load_wait_s`` for the load: the pod is Ready once one
        worker has loaded, and the kernel may hand a request to another worker still loading.
        """
        if wait:
            self._loaded.wait(self.load_wait_s)
        if self.model is None or self.schema is None or self.batcher is None:
            raise NotReady("the model is still loading")
        return self.model, self.schema, self.batcher


def _cheap(model: LoadedModel) -> bool:
    """Whether one row costs the model less than batching's bookkeeping can save."""
    try:
        return model.call_seconds(1) < COSTLY_CALL_S
    except Exception:  # noqa: BLE001 - a model that cannot predict zeros keeps the batcher; verify() reports it
        return False


def serving() -> Serving:
    """The ``Serving`` of the current app."""
    state: Serving = current_app.extensions["mlmodel"]
    return state


def json_response(body: Any, status: int = 200) -> Response:
    """A JSON response, encoded with orjson."""
    return Response(orjson.dumps(body), status=status, mimetype="application/json")


def error_reply(error: Exception, path: str, request_id: str | None) -> tuple[int, bytes]:
    """The status and JSON body that answer ``error`` on ``path``, from the app or the lane.

    A ``ServerError`` takes its status from ``errors``' table and is logged when it is a 5xx
    (a model still loading is not a fault); any other exception is a fault: logged with its
    traceback, and answered with a 500 that names only the request id.
    """
    if isinstance(error, ServerError):
        status = status_for(error)
        if status >= 500 and not isinstance(error, NotReady):
            log.error(error.message, extra={"fields": {"request_id": request_id, "code": error.code}})
    else:
        log.error("unhandled error", exc_info=error, extra={"fields": {"request_id": request_id}})
        status, error = 500, ServerError(f"internal server error (request id {request_id})")
    return status, orjson.dumps(body_for(error, path))
