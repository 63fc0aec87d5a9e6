"""HTTP routes: the tutorials' /predict, KServe V1, the Open Inference Protocol (V2), health, info, metrics."""

from __future__ import annotations

from typing import Any

import numpy as np
from flask import Blueprint, Response, request

from mlmodel_server import __version__, protocol
from mlmodel_server.app import json_response, serving
from mlmodel_server.batching import Batcher
from mlmodel_server.errors import ModelNotFound, UnsupportedMediaType
from mlmodel_server.model import LoadedModel

blueprint = Blueprint("mlmodel", __name__)


def _payload() -> dict[str, Any]:
    mimetype = request.mimetype
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise UnsupportedMediaType(f"Content-Type must be application/json, got {mimetype or 'none'}")
    return protocol.parse_json(_body())


def _body() -> bytes:
    """Read the body to its end: a chunked body over the limit raises 413 only on the read past it."""
    parts = []
    while chunk := request.stream.read(1 << 16):
        parts.append(chunk)
    return b"".join(parts)


def _named(name: str) -> tuple[LoadedModel, protocol.Schema, Batcher]:
    """The model called ``name`` with its schema and batcher: 404 for another name, 503 while loading."""
    state = serving()
    if name != state.settings.model_name:
        raise ModelNotFound(f"no model named {name!r}; this server serves {state.settings.model_name!r}")
    return state.ready()


@blueprint.post("/predict")
def predict() -> Response:
    model, schema, batcher = serving().ready()
    with batcher.arrival() as ticket:
        x = protocol.decode_predict(_payload(), schema)
        prediction = batcher.submit(ticket, x, want_proba=model.has_proba)
    return json_response(protocol.encode_predict(prediction))


@blueprint.post("/v1/models/<name>:predict")
def v1_predict(name: str) -> Response:
    _, schema, batcher = _named(name)
    with batcher.arrival() as ticket:
        x = protocol.decode_v1(_payload(), schema)
        prediction = batcher.submit(ticket, x, want_proba=False)
    return json_response(protocol.encode_v1(prediction))


@blueprint.get("/v1/models/<name>")
def v1_model(name: str) -> Response:
    _named(name)
    return json_response({"name": name, "ready": True})


@blueprint.post("/v2/models/<name>/infer")
def v2_infer(name: str) -> Response:
    _, schema, batcher = _named(name)
    with batcher.arrival() as ticket:
        decoded = protocol.decode_v2(_payload(), schema)
        prediction = batcher.submit(ticket, decoded.x, want_proba="predict_proba" in decoded.outputs)
    return json_response(protocol.encode_v2(prediction, decoded, name))


@blueprint.get("/v2/models/<name>")
def v2_model(name: str) -> Response:
    model, _, _ = _named(name)
    width = model.n_features if model.n_features is not None else -1
    outputs = [{"name": "predict", "datatype": _prediction_datatype(model), "shape": [-1]}]
    if model.has_proba:
        outputs.append({"name": "predict_proba", "datatype": "FP64", "shape": [-1, len(model.classes or []) or -1]})
    return json_response(
        {
            "name": name,
            "versions": [],
            "platform": "sklearn",
            "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, width]}],
            "outputs": outputs,
        }
    )


@blueprint.get("/v2/models/<name>/ready")
def v2_model_ready(name: str) -> Response:
    _named(name)
    return json_response({"name": name, "ready": True})


@blueprint.get("/v2")
def v2_server() -> Response:
    return json_response({"name": "mlmodel-server", "version": __version__, "extensions": []})


@blueprint.get("/v2/health/live")
def v2_live() -> Response:
    return json_response({"live": True})


@blueprint.get("/v2/health/ready")
def v2_ready() -> Response:
    serving().ready()
    return json_response({"ready": True})


@blueprint.get("/healthz")
def healthz() -> Response:
    return json_response({"status": "ok"})


@blueprint.get("/readyz")
def readyz() -> Response:
    serving().ready()
    return json_response({"status": "ready"})


@blueprint.get("/model-info")
def model_info() -> Response:
    state = serving()
    model, _, _ = state.ready()
    return json_response({"name": state.settings.model_name, "variant": state.settings.variant, **model.info()})


@blueprint.get("/metrics")
def metrics() -> Response:
    body, content_type = serving().metrics.render()
    return Response(body, mimetype=content_type.split(";")[0], content_type=content_type)


def _prediction_datatype(model: LoadedModel) -> str:
    if model.classes is None:
        return "FP64"
    return protocol.v2_datatype(np.asarray(model.classes))
