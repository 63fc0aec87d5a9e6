"""HTTP routes: the tutorials' /predict, KServe V1, the Open Inference Protocol (V2), health, info, metrics."""

from __future__ import annotations

from typing import Any

import numpy as np
from flask import Blueprint, Response, request

from mlmodel_server import __version__, protocol, tensors, v2
from mlmodel_server.batching import Batcher
from mlmodel_server.errors import ModelNotFound, UnsupportedMediaType
from mlmodel_server.model import LoadedModel
from mlmodel_server.serving import json_response, serving

blueprint = Blueprint("mlmodel", __name__)

# A body without a Content-Type, or with curl's default form type, is read as JSON (these exact
# header values are taken as they are: parsing the header with Werkzeug costs about 3 µs a request).
READ_AS_JSON = frozenset({"", "application/json", "application/x-www-form-urlencoded"})
BINARY_TYPE = "application/octet-stream"
HEADER_LENGTH = "Inference-Header-Content-Length"


def _payload() -> dict[str, Any]:
    if request.environ.get("CONTENT_TYPE", "") not in READ_AS_JSON and not _json_type(request.mimetype):
        raise UnsupportedMediaType(f"Content-Type must be application/json (or none), got {request.mimetype}")
    return protocol.parse_json(_body())


def _v2_payload() -> tuple[dict[str, Any], memoryview]:
    """The JSON header and the binary part of a V2 request (binary tensor data extension)."""
    if not _json_type(request.mimetype) and request.mimetype != BINARY_TYPE:
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, or {BINARY_TYPE} with the binary tensor data extension; "
            f"got {request.mimetype}"
        )
    return v2.split_body(_body(), request.headers.get(HEADER_LENGTH))


def _json_type(mimetype: str) -> bool:
    return mimetype in READ_AS_JSON or mimetype.endswith("+json")


def _body() -> bytes:
    """Read the body to its end: a chunked body over the limit raises 413 only on the read past it."""
    parts = []
    while chunk := request.stream.read(1 << 16):
        parts.append(chunk)
    return b"".join(parts)


def _named(name: str, version: str | None = None, wait: bool = False) -> tuple[LoadedModel, protocol.Schema, Batcher]:
    """The model called ``name`` (at ``version``, when given) with its schema and batcher.

    404 for another name or version, 503 while loading (after ``Serving.ready``'s wait, with ``wait``).
    """
    state = serving()
    if name != state.settings.model_name:
        raise ModelNotFound(f"no model named {name!r}; this server serves {state.settings.model_name!r}")
    model, schema, batcher = state.ready(wait)
    if version is not None and version != model.version:
        raise ModelNotFound(f"model {name!r} has no version {version!r}; it serves version {model.version!r}")
    return model, schema, batcher


@blueprint.post("/predict")
def predict() -> Response:
    model, schema, batcher = serving().ready(wait=True)
    with batcher.arrival() as ticket:
        x = protocol.decode_predict(_payload(), schema)
        prediction = batcher.submit(ticket, x, want_proba=model.has_proba)
    return json_response(protocol.encode_predict(prediction))


@blueprint.post("/v1/models/<name>:predict")
def v1_predict(name: str) -> Response:
    _, schema, batcher = _named(name, wait=True)
    with batcher.arrival() as ticket:
        x = protocol.decode_v1(_payload(), schema)
        prediction = batcher.submit(ticket, x, want_proba=False)
    return json_response(protocol.encode_v1(prediction))


@blueprint.get("/v1/models/<name>")
def v1_model(name: str) -> Response:
    _named(name)
    return json_response({"name": name, "ready": True})


@blueprint.get("/v1/models")
def v1_models() -> Response:
    return json_response({"models": [serving().settings.model_name]})


@blueprint.post("/v2/models/<name>/infer")
@blueprint.post("/v2/models/<name>/versions/<version>/infer")
def v2_infer(name: str, version: str | None = None) -> Response:
    model, schema, batcher = _named(name, version, wait=True)
    with batcher.arrival() as ticket:
        decoded = v2.decode(*_v2_payload(), schema)
        prediction = batcher.submit(ticket, decoded.x, want_proba=decoded.wants_proba)
    body, header_length = v2.encode(prediction, decoded, model_name=name, model_version=model.version)
    if header_length is None:
        return Response(body, mimetype="application/json")
    return Response(body, mimetype=BINARY_TYPE, headers={HEADER_LENGTH: str(header_length)})


@blueprint.get("/v2/models/<name>")
@blueprint.get("/v2/models/<name>/versions/<version>")
def v2_model(name: str, version: str | None = None) -> Response:
    model, _, _ = _named(name, version)
    width = model.n_features if model.n_features is not None else -1
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
            "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, width]}],
            "outputs": outputs,
        }
    )


@blueprint.get("/v2/models/<name>/ready")
@blueprint.get("/v2/models/<name>/versions/<version>/ready")
def v2_model_ready(name: str, version: str | None = None) -> Response:
    _named(name, version)
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
