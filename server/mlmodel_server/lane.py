"""Prediction requests answered straight from WSGI, without Flask's request machinery.

For a cheap model, Flask's request context, URL matching, ``Request`` and ``Response`` cost
more than the model. A POST to one of the prediction routes of the model served, once it has
loaded, is answered here by the same ``inference`` function the Flask route calls. Anything
else, and any request this cannot answer with a 200 (an error of any kind, a body without a
``Content-Length`` or over the limit, a Content-Type to parse), goes to the Flask app, with the
bytes read here put back: every error still has its one path through ``app``'s handlers.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from mlmodel_server import auth, inference, protocol, v2
from mlmodel_server.errors import Unauthorized
from mlmodel_server.observe import ROUTE
from mlmodel_server.serving import Serving

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

# (the model served, a way to read the body, the environ, the version in the path)
Answer = Callable[[Serving, Callable[[], bytes], "WSGIEnvironment", "str | None"], inference.Reply]


class _Unanswered(Exception):
    """The request is Flask's to answer."""


class Lane:
    """``app`` with the prediction routes of ``state``'s model answered before it, when they answer 200."""

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
        if route is None:
            return self.app(environ, start_response)
        rule, answer, version = route
        read: list[bytes] = []

        def body() -> bytes:
            read.append(_read(environ, self._state.settings.max_body_bytes))
            return read[-1]

        try:
            reply = answer(self._state, body, environ, version)
        except Exception:  # noqa: BLE001 - Flask's routes answer it again, from the same bytes
            if read:
                environ["wsgi.input"] = io.BytesIO(read[0])
            return self.app(environ, start_response)
        headers = [("Content-Type", reply.content_type), ("Content-Length", str(len(reply.body)))]
        if reply.header_length is not None:
            headers.append((inference.HEADER_LENGTH, str(reply.header_length)))
        environ[ROUTE] = (rule, "POST", environ["PATH_INFO"])
        start_response("200 OK", headers)
        return [reply.body]

    def _route(self, environ: WSGIEnvironment) -> tuple[str, Answer, str | None] | None:
        """The rule, answer and version for this request, or None: not a POST to a prediction route,
        the model not loaded yet (Flask's route waits for it), or an API key that does not pass."""
        if environ.get("REQUEST_METHOD") != "POST" or self._state.model is None:
            return None
        path = environ.get("PATH_INFO", "")
        version = None
        if path in self._routes:
            rule, answer = self._routes[path]
        else:
            prefix, suffix = self._versioned
            version = path[len(prefix) : -len(suffix)]
            if not (path.startswith(prefix) and path.endswith(suffix) and version and "/" not in version):
                return None
            rule, answer = inference.V2_VERSION_INFER, _v2_infer
        keys = self._state.api_keys
        if keys is not None:
            try:
                auth.check(environ.get("HTTP_AUTHORIZATION", ""), environ.get("HTTP_X_API_KEY", ""), keys)
            except Unauthorized:  # Flask's hook refuses it
                return None
        return rule, answer, version


def _read(environ: WSGIEnvironment, limit: int) -> bytes:
    """The body, when it has a ``Content-Length`` within ``limit`` and all of it arrives."""
    length = environ.get("CONTENT_LENGTH", "")
    if not length.isdigit() or (size := int(length)) > limit:
        raise _Unanswered
    data: bytes = environ["wsgi.input"].read(size)
    if len(data) != size:
        raise _Unanswered
    return data


def _json(environ: WSGIEnvironment, body: Callable[[], bytes]) -> Callable[[], dict[str, Any]]:
    if environ.get("CONTENT_TYPE", "") not in inference.READ_AS_JSON:
        raise _Unanswered
    return lambda: protocol.parse_json(body())


def _predict(state: Serving, body: Callable[[], bytes], environ: WSGIEnvironment, _: str | None) -> inference.Reply:
    return inference.predict(state, _json(environ, body))


def _v1_predict(state: Serving, body: Callable[[], bytes], environ: WSGIEnvironment, _: str | None) -> inference.Reply:
    return inference.v1_predict(state, state.settings.model_name, _json(environ, body))


def _v2_infer(
    state: Serving, body: Callable[[], bytes], environ: WSGIEnvironment, version: str | None
) -> inference.Reply:
    content_type = environ.get("CONTENT_TYPE", "")
    if content_type not in inference.READ_AS_JSON and content_type != inference.BINARY_TYPE:
        raise _Unanswered

    def read() -> tuple[dict[str, Any], memoryview]:
        return v2.split_body(body(), environ.get("HTTP_INFERENCE_HEADER_CONTENT_LENGTH"))

    return inference.v2_infer(state, state.settings.model_name, version, read)
