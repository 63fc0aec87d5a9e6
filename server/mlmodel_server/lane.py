"""Prediction requests answered straight from WSGI, without Flask's request machinery.

For a cheap model, Flask's request context, URL matching, ``Request`` and ``Response`` cost
more than the model. A POST to one of the prediction routes of the model served, with a
``Content-Length`` within the limit, is answered here, errors and all: by the same ``inference``
function and content-type rule as the Flask route, and with ``serving.error_reply``'s status and
body. Anything else (another route or method, a chunked body, a body over the limit) goes to the
Flask app untouched, before a byte is read: each request takes one path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from werkzeug.http import HTTP_STATUS_CODES

from mlmodel_server import auth, inference, protocol, v2
from mlmodel_server.errors import BadRequest
from mlmodel_server.observe import REQUEST_ID, ROUTE
from mlmodel_server.serving import Serving, error_reply

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

# (the model served, the version in the path, the environ, the body's length)
Answer = Callable[[Serving, "str | None", "WSGIEnvironment", int], inference.Reply]


class Lane:
    """``app`` with the prediction routes of ``state``'s model answered before it."""

    def __init__(self, app: WSGIApplication, state: Serving) -> None:
        self.app = app
        self._state = state
        name = state.settings.model_name
        self._routes: dict[str, tuple[str, Answer]] = {
            inference.PREDICT: (inference.PREDICT, _predict),
            inference.V1_PREDICT.replace("<name>", name): (inference.V1_PREDICT, _v1_predict),
            inference.V2_INFER.replace("<name>", name): (inference.V2_INFER, _v2_infer),
        }
        prefix, _, suffix = inference.V2_VERSION_INFER.replace("<name>", name).partition("<version>")
        self._versioned = (prefix, suffix)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        route = self._route(environ)
        length = environ.get("CONTENT_LENGTH", "")
        if route is None or not length.isdecimal() or (size := int(length)) > self._state.settings.max_body_bytes:
            return self.app(environ, start_response)
        rule, answer, version = route
        path = environ["PATH_INFO"]
        environ[ROUTE] = (rule, "POST", path)
        state = self._state
        try:
            if state.api_keys is not None:
                auth.check(environ.get("HTTP_AUTHORIZATION", ""), environ.get("HTTP_X_API_KEY", ""), state.api_keys)
            reply = answer(state, version, environ, size)
        except Exception as error:  # noqa: BLE001 - answered as the app answers it
            status, body = error_reply(error, path, environ.get(REQUEST_ID))
            start_response(
                f"{status} {HTTP_STATUS_CODES[status].upper()}",
                [("Content-Type", inference.JSON_TYPE), ("Content-Length", str(len(body)))],
            )
            return [body]
        headers = [("Content-Type", reply.content_type), ("Content-Length", str(len(reply.body))), *reply.headers()]
        start_response("200 OK", headers)
        return [reply.body]

    def _route(self, environ: WSGIEnvironment) -> tuple[str, Answer, str | None] | None:
        """The rule, answer and version for this request, or None: not a POST to a prediction route."""
        if environ.get("REQUEST_METHOD") != "POST":
            return None
        path = environ.get("PATH_INFO", "")
        if path in self._routes:
            rule, answer = self._routes[path]
            return rule, answer, None
        prefix, suffix = self._versioned
        version = path[len(prefix) : -len(suffix)]
        if not (path.startswith(prefix) and path.endswith(suffix) and version and "/" not in version):
            return None
        return inference.V2_VERSION_INFER, _v2_infer, version


def _body(environ: WSGIEnvironment, size: int) -> bytes:
    data: bytes = environ["wsgi.input"].read(size)
    if len(data) != size:
        raise BadRequest(f"the request body ended after {len(data)} of its {size} bytes (Content-Length)")
    return data


def _json(state: Serving, environ: WSGIEnvironment, size: int) -> dict[str, Any]:
    inference.check_content_type(environ.get("CONTENT_TYPE", ""), binary=False)
    limit = state.settings.max_json_bytes
    protocol.check_json_size(size, limit)  # before a byte is read
    return protocol.parse_json(_body(environ, size), limit, protocol.ROWS_FIELDS)


def _predict(state: Serving, _: str | None, environ: WSGIEnvironment, size: int) -> inference.Reply:
    return inference.predict(state, lambda: _json(state, environ, size))


def _v1_predict(state: Serving, _: str | None, environ: WSGIEnvironment, size: int) -> inference.Reply:
    return inference.v1_predict(state, state.settings.model_name, lambda: _json(state, environ, size))


def _v2_infer(state: Serving, version: str | None, environ: WSGIEnvironment, size: int) -> inference.Reply:
    def read() -> tuple[dict[str, Any], memoryview]:
        inference.check_content_type(environ.get("CONTENT_TYPE", ""), binary=True)
        header_length = environ.get("HTTP_INFERENCE_HEADER_CONTENT_LENGTH")
        return v2.split_body(_body(environ, size), header_length, state.settings.max_json_bytes)

    return inference.v2_infer(state, state.settings.model_name, version, read)
