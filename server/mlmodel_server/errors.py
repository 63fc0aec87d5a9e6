"""Domain errors, and the one table that maps them to HTTP statuses.

Nothing here imports Flask: ``serving.error_reply`` turns ``status_for`` and ``body_for`` into
the answer that both the app and the lane send, and every other module raises these errors.
"""

from __future__ import annotations

from typing import Any


class ServerError(Exception):
    """Base of every error a client may see; ``code`` is stable, the message is for humans."""

    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ServerError):
    """The request is not valid for this model."""

    code = "bad_request"


class MalformedJSON(BadRequest):
    code = "malformed_json"


class InvalidPayload(BadRequest):
    """Valid JSON, but not the shape any protocol accepts ("nested garbage")."""

    code = "invalid_payload"


class EmptyBatch(BadRequest):
    code = "empty_batch"


class BatchTooLarge(BadRequest):
    code = "batch_too_large"


class FeatureCountMismatch(BadRequest):
    code = "wrong_feature_count"


class NonNumericValue(BadRequest):
    code = "non_numeric_value"


class MissingValue(BadRequest):
    code = "missing_value"


class FeatureNameError(BadRequest):
    code = "invalid_feature_names"


class WrongType(BadRequest):
    """A value that is not of its column's type in the input schema (a boolean for a double, 2.5 for a long)."""

    code = "wrong_type"


class ModelRejectedInput(BadRequest):
    """The estimator itself refused the input (its message is passed on)."""

    code = "invalid_input"


class Unauthorized(ServerError):
    code = "unauthorized"


class ModelNotFound(ServerError):
    code = "model_not_found"


class RouteNotFound(ServerError):
    code = "not_found"


class MethodNotAllowed(ServerError):
    code = "method_not_allowed"


class UnsupportedMediaType(ServerError):
    code = "unsupported_media_type"


class PayloadTooLarge(ServerError):
    code = "payload_too_large"


class NotReady(ServerError):
    code = "not_ready"


class ModelLoadError(ServerError):
    """The model cannot be fetched, verified or loaded; the server refuses to start."""

    code = "model_load_failed"


class DigestMismatch(ModelLoadError):
    code = "digest_mismatch"


class UnpinnedModel(ModelLoadError):
    code = "unpinned_model"


class UnsupportedModel(ModelLoadError):
    code = "unsupported_model"


class InvalidInputSchema(ModelLoadError):
    """The input schema cannot be read, or disagrees with the model."""

    code = "invalid_input_schema"


class CredentialsRefused(ModelLoadError):
    """The model's server refused the download (HTTP 401 or 403)."""

    code = "credentials_refused"


HTTP_STATUS: dict[type[ServerError], int] = {
    BadRequest: 400,
    Unauthorized: 401,
    ModelNotFound: 404,
    RouteNotFound: 404,
    MethodNotAllowed: 405,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    NotReady: 503,
    ServerError: 500,
}


def status_for(error: ServerError) -> int:
    """The HTTP status of ``error``: its nearest class in ``HTTP_STATUS``."""
    for cls in type(error).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500


_FLAT_SHAPE_ROOTS = frozenset({"", "v1", "v2"})
"""The first path segments whose errors take KServe V1's and the Open Inference Protocol's flat shape."""


def body_for(error: ServerError, path: str) -> dict[str, Any]:
    """The JSON body of an error response on ``path``, in the shape of the route's protocol.

    ``{"error": message, "code": code}`` (KServe V1 and the Open Inference Protocol: under ``/``,
    ``/v1`` and ``/v2``), else ``{"error": {"code", "message"}}`` (``/predict`` and the server's own routes).
    """
    if path.split("/")[1] in _FLAT_SHAPE_ROOTS:
        return {"error": error.message, "code": error.code}
    return {"error": {"code": error.code, "message": error.message}}
