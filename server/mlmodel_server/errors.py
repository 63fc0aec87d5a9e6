"""Domain errors, and the one table that maps them to HTTP statuses.

Nothing here imports Flask: the app turns ``status_for`` and ``body_for`` into
responses, and every other module raises these errors.
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


def body_for(error: ServerError, *, flat: bool) -> dict[str, Any]:
    """The JSON body of an error response.

    ``{"error": {"code", "message"}}`` (``/predict`` and the server's own routes), or with ``flat``
    the KServe V1 / Open Inference Protocol shape ``{"error": message, "code": code}``.
    """
    if flat:
        return {"error": error.message, "code": error.code}
    return {"error": {"code": error.code, "message": error.message}}
