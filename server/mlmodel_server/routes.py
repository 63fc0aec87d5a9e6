"""HTTP routes: the tutorials' /predict, KServe V1, the Open Inference Protocol (V2), health, info, metrics."""

from __future__ import annotations

from typing import Any

import numpy as np
from flask import Blueprint, Response, request

from mlmodel_server import __version__, inference, protocol, tensors, v2
from mlmodel_server.inference import HEADER_LENGTH
from mlmodel_server.model import LoadedModel
from mlmodel_server.serving import json_response, serving

blueprint = Blueprint("mlmodel", __name__)


def _payload() -> dict[str, Any]:
    inference.check_content_type(request.environ.get("CONTENT_TYPE", ""), binary=False)
    return protocol.parse_json(_body(), serving().settings.max_json_bytes, protocol.ROWS_FIELDS)


def _v2_payload() -> tuple[dict[str, Any], memoryview]:
    """The JSON header and the binary part of a V2 request (binary tensor data extension)."""
    inference.check_content_type(request.environ.get("CONTENT_TYPE", ""), binary=True)
    return v2.split_body(_body(), request.headers.get(HEADER_LENGTH), serving().settings.max_json_bytes)


def _body() -> bytes:
    """Read the body to its end: a chunked body over the limit raises 413 only on the read past it."""
    parts = []
    while chunk := request.stream.read(1 << 16):
        parts.append(chunk)
    return b"".join(parts)


def _reply(reply: inference.Reply) -> Response:
    return Response(reply.body, mimetype=reply.content_type, headers=reply.headers())


@blueprint.post(inference.PREDICT)
def predict() -> Response:
    return _reply(inference.predict(serving(), _payload))


@blueprint.post(inference.V1_PREDICT)
def v1_predict(name: str) -> Response:
    return _reply(inference.v1_predict(serving(), name, _payload))


@blueprint.post(inference.V2_INFER)
@blueprint.post(inference.V2_VERSION_INFER)
def v2_infer(name: str, version: str | None = None) -> Response:
    return _reply(inference.v2_infer(serving(), name, version, _v2_payload))


@blueprint.get("/v1/models/<name>")
def v1_model(name: str) -> Response:
    inference.named(serving(), name)
    return json_response({"name": name, "ready": True})


@blueprint.get("/v1/models")
def v1_models() -> Response:
    return json_response({"models": [serving().settings.model_name]})


@blueprint.get("/v2/models/<name>")
@blueprint.get("/v2/models/<name>/versions/<version>")
def v2_model(name: str, version: str | None = None) -> Response:
    model, _, _ = inference.named(serving(), name, version)
    described = {
        "predict": {"datatype": _prediction_datatype(model), "shape": [-1]},
        "predict_proba": {"datatype": "FP64", "shape": [-1, len(model.classes or []) or -1]},
    }
    outputs = [{"name": name, **described[name]} for name in v2.offered_outputs(model.has_proba)]
    return json_response(
        {
            "name": name,
            "versions": [model.version],
            "platform": "sklearn",
            "inputs": _v2_inputs(model),
            "outputs": outputs,
        }
    )


def _v2_inputs(model: LoadedModel) -> list[dict[str, Any]]:
    """One input per column of the input schema; else one ``[rows, features]`` input."""
    if model.inputs is not None:
        return [{"name": c.name, "datatype": c.datatype, "shape": [-1]} for c in model.inputs.columns]
    width = model.n_features if model.n_features is not None else -1
    return [{"name": "input-0", "datatype": "FP64", "shape": [-1, width]}]


@blueprint.get("/v2/models/<name>/ready")
@blueprint.get("/v2/models/<name>/versions/<version>/ready")
def v2_model_ready(name: str, version: str | None = None) -> Response:
    inference.named(serving(), name, version)
    return json_response({"name": name, "ready": True})


@blueprint.get("/v2")
def v2_server() -> Response:
    return json_response({"name": "mlmodel-server", "version": __version__, "extensions": list(v2.EXTENSIONS)})


@blueprint.get("/v2/health/live")
def v2_live() -> Response:
    return json_response({"live": True})


@blueprint.get("/v2/health/ready")
def v2_ready() -> Response:
    serving().ready()
    return json_response({"ready": True})


@blueprint.get("/")
def live() -> Response:
    """KServe V1 liveness."""
    return json_response({"status": "alive"})


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
    return tensors.datatype_of(np.asarray(model.classes))
