"""``create_app()``: the Flask app and its error handling; ``lane`` answers predictions before it, ``shadow``
compares a router's copy with the primary's answer, and ``observe`` adds headers, metrics and the access log."""

from __future__ import annotations

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, NotFound, RequestEntityTooLarge
from werkzeug.exceptions import MethodNotAllowed as HTTPMethodNotAllowed

from mlmodel_server import auth
from mlmodel_server.config import Settings
from mlmodel_server.errors import MethodNotAllowed, PayloadTooLarge, RouteNotFound, ServerError, body_for
from mlmodel_server.inference import JSON_TYPE
from mlmodel_server.lane import Lane
from mlmodel_server.metrics import Metrics
from mlmodel_server.model import LoadedModel
from mlmodel_server.observe import REQUEST_ID, ROUTE, Observed
from mlmodel_server.routes import blueprint
from mlmodel_server.serving import Serving, error_reply, json_response, serving
from mlmodel_server.shadow import Shadow


class _ServerFlask(Flask):
    """Flask whose debug mode (and so its interactive debugger) cannot be switched on, and which
    leaves each request's route in the environ for ``Observed``."""

    @property
    def debug(self) -> bool:
        return False

    @debug.setter
    def debug(self, value: bool) -> None:
        if value:
            raise RuntimeError("mlmodel-server never runs in Flask debug mode")

    def full_dispatch_request(self) -> Response:
        """Flask's, with the request's route, method and path left in the environ for ``Observed``."""
        rule = request.url_rule
        request.environ[ROUTE] = (rule.rule if rule is not None else "unmatched", request.method, request.path)
        return super().full_dispatch_request()


def create_app(
    settings: Settings,
    model: LoadedModel | None = None,
    *,
    api_keys: tuple[bytes, ...] | None = None,
) -> Flask:
    """Build the app; with ``model`` None it answers 503 on /readyz until ``Serving.set_model``."""
    app = _ServerFlask("mlmodel_server")
    app.config.update(
        TESTING=False,
        PROPAGATE_EXCEPTIONS=False,
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        JSON_SORT_KEYS=False,
    )
    state = Serving(settings, Metrics(), api_keys)
    app.extensions["mlmodel"] = state
    if model is not None:
        state.set_model(model)
    app.register_blueprint(blueprint)
    if api_keys is not None:
        app.before_request(_authenticate)
    app.wsgi_app = Observed(Shadow(Lane(app.wsgi_app, state), state), settings, state.metrics)  # type: ignore[method-assign]
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _error)
    return app


def _authenticate() -> None:
    keys = serving().api_keys
    if keys is not None and request.path not in auth.OPEN_PATHS:
        auth.check(request.headers.get("Authorization", ""), request.headers.get("X-API-Key", ""), keys)


def _error(error: Exception) -> Response:
    """Any error a route raises: a ``ServerError`` by ``errors``' table, anything else a logged 500."""
    status, body = error_reply(error, request.path, request.environ.get(REQUEST_ID))
    return Response(body, status=status, mimetype=JSON_TYPE)


def _http_error(error: HTTPException) -> Response:
    limit = serving().settings.max_body_bytes
    mapped: ServerError
    if isinstance(error, RequestEntityTooLarge):
        mapped = PayloadTooLarge(f"request body is larger than the limit of {limit} bytes (--max-body-bytes)")
    elif isinstance(error, HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(error.valid_methods or []))
        mapped = MethodNotAllowed(f"{request.method} is not allowed on {request.path}; allowed: {allowed}")
    elif isinstance(error, NotFound):
        mapped = RouteNotFound(f"no such endpoint: {request.method} {request.path}")
    else:
        mapped = ServerError(error.description or error.name)
        mapped.code = (error.name or "error").lower().replace(" ", "_")
        return json_response(body_for(mapped, request.path), error.code or 500)
    response = _error(mapped)
    if isinstance(error, HTTPMethodNotAllowed) and error.valid_methods:
        response.headers["Allow"] = ", ".join(sorted(error.valid_methods))
    return response
