"""The prediction endpoints' work without Flask: a way to read the request in, a response body out.

``routes`` calls these from Flask, and ``lane`` straight from WSGI; both give each a ``read``
that reads and parses the body, called while the request counts as arriving for the batcher.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from mlmodel_server import predicted, protocol, v2
from mlmodel_server.batching import Batcher
from mlmodel_server.errors import ModelNotFound, UnsupportedMediaType
from mlmodel_server.model import LoadedModel, Prediction
from mlmodel_server.serving import Serving

# The routes, as Flask's rules (the request metrics' endpoint label).
PREDICT = "/predict"
V1_PREDICT = "/v1/models/<name>:predict"
V2_INFER = "/v2/models/<name>/infer"
V2_VERSION_INFER = "/v2/models/<name>/versions/<version>/infer"

JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"
HEADER_LENGTH = "Inference-Header-Content-Length"
# A body without a Content-Type, or with curl's default form type, is read as JSON.
READ_AS_JSON = frozenset({"", JSON_TYPE, "application/x-www-form-urlencoded"})

ReadJSON = Callable[[], dict[str, Any]]
ReadV2 = Callable[[], tuple[dict[str, Any], memoryview]]


@dataclass(frozen=True)
class Reply:
    """A 200 response: its body, its Content-Type, V2's ``Inference-Header-Content-Length``, and the rows by
    predicted class (``predicted``)."""

    body: bytes
    content_type: str = JSON_TYPE
    header_length: int | None = None
    predicted: str = ""

    def headers(self) -> list[tuple[str, str]]:
        """The response's headers but Content-Type and Content-Length."""
        out = [] if self.header_length is None else [(HEADER_LENGTH, str(self.header_length))]
        return out + ([(predicted.HEADER, self.predicted)] if self.predicted else [])


def _predicted(model: LoadedModel, prediction: Prediction) -> str:
    return predicted.header(prediction.predictions, classifier=model.classes is not None)


def check_content_type(content_type: str, *, binary: bool) -> None:
    """415 unless a body with this ``Content-Type`` header is read as JSON, or as V2's binary one with ``binary``.

    The routes and the lane both ask here. The common exact values cost one set lookup; anything
    else is parsed as Werkzeug parses a mimetype (parameters dropped, lower case), so that
    ``application/json; charset=utf-8`` and ``application/<type>+json`` are JSON too.
    """
    if content_type in READ_AS_JSON or (binary and content_type == BINARY_TYPE):
        return
    mimetype = content_type.partition(";")[0].strip(" \t").lower()
    if mimetype in READ_AS_JSON or mimetype.endswith("+json") or (binary and mimetype == BINARY_TYPE):
        return
    if binary:
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, or {BINARY_TYPE} with the binary tensor data extension; "
            f"got {mimetype}"
        )
    raise UnsupportedMediaType(f"Content-Type must be application/json (or none), got {mimetype}")


def named(
    state: Serving, name: str, version: str | None = None, wait: bool = False
) -> tuple[LoadedModel, protocol.Schema, Batcher]:
    """The model called ``name`` (at ``version``, when given) with its schema and batcher.

    404 for another name or version, 503 while loading (after ``Serving.ready``'s wait, with ``wait``).
    """
    if name != state.settings.model_name:
        raise ModelNotFound(f"no model named {name!r}; this server serves {state.settings.model_name!r}")
    model, schema, batcher = state.ready(wait)
    if version is not None and version != model.version:
        raise ModelNotFound(f"model {name!r} has no version {version!r}; it serves version {model.version!r}")
    return model, schema, batcher


def predict(state: Serving, read: ReadJSON) -> Reply:
    """``/predict``: predictions, and probabilities where the model has them."""
    model, schema, batcher = state.ready(wait=True)
    with batcher.arrival() as ticket:
        x = protocol.decode_predict(read(), schema)
        prediction = batcher.submit(ticket, x, want_proba=model.has_proba)
    return Reply(orjson.dumps(protocol.encode_predict(prediction)), predicted=_predicted(model, prediction))


def v1_predict(state: Serving, name: str, read: ReadJSON) -> Reply:
    """KServe V1 ``:predict``."""
    model, schema, batcher = named(state, name, wait=True)
    with batcher.arrival() as ticket:
        x = protocol.decode_v1(read(), schema)
        prediction = batcher.submit(ticket, x, want_proba=False)
    return Reply(orjson.dumps(protocol.encode_v1(prediction)), predicted=_predicted(model, prediction))


def v2_infer(state: Serving, name: str, version: str | None, read: ReadV2) -> Reply:
    """The Open Inference Protocol's ``infer``, JSON or with binary tensor data."""
    model, schema, batcher = named(state, name, version, wait=True)
    with batcher.arrival() as ticket:
        decoded = v2.decode(*read(), schema)
        prediction = batcher.submit(ticket, decoded.x, want_proba=decoded.wants_proba)
    body, header_length = v2.encode(prediction, decoded, model_name=name, model_version=model.version)
    content_type = JSON_TYPE if header_length is None else BINARY_TYPE
    return Reply(body, content_type, header_length, _predicted(model, prediction))
