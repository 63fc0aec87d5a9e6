"""A shadow copy from the router, compared with the primary's answer: WSGI middleware before the lane.

The router sends a sampled request again to the mirror variant after the client has its answer, with the
primary's answer in front of the request's body (``X-Mlmodel-Primary-Length`` bytes of it; its V2 header
length in ``X-Mlmodel-Primary-Header-Length``, and the regressors' tolerance in ``X-Mlmodel-Tolerance``).
This server answers the request as any other, and adds ``X-Mlmodel-Comparison`` (``agreement``) for the
router to count. The router drops these headers from clients' requests, so only its copies carry them.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from werkzeug.http import HTTP_STATUS_CODES

from mlmodel_server import agreement
from mlmodel_server.errors import InvalidPayload, ServerError
from mlmodel_server.inference import HEADER_LENGTH, JSON_TYPE
from mlmodel_server.observe import REQUEST_ID
from mlmodel_server.serving import Serving, error_reply

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

PRIMARY_LENGTH = "HTTP_X_MLMODEL_PRIMARY_LENGTH"  # the router's header names (its twin: operator names.py)
PRIMARY_HEADER_LENGTH = "HTTP_X_MLMODEL_PRIMARY_HEADER_LENGTH"
TOLERANCE = "HTTP_X_MLMODEL_TOLERANCE"
COMPARISON = "X-Mlmodel-Comparison"

log = logging.getLogger(__name__)


class Shadow:
    """``app``, with a copy that carries the primary's answer compared with this server's."""

    def __init__(self, app: WSGIApplication, state: Serving) -> None:
        self.app = app
        self._state = state

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if PRIMARY_LENGTH not in environ:
            return self.app(environ, start_response)
        try:
            primary, tolerance = self._split(environ)
        except ServerError as error:
            status, body = error_reply(error, environ.get("PATH_INFO", ""), environ.get(REQUEST_ID))
            headers = [("Content-Type", JSON_TYPE), ("Content-Length", str(len(body)))]
            start_response(f"{status} {HTTP_STATUS_CODES[status].upper()}", headers)
            return [body]
        held: list[Any] = []
        written: list[bytes] = []

        def start(line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            held[:] = [line, headers, exc_info]
            return written.append

        answer = self.app(environ, start)
        try:
            body = b"".join([*written, *answer])
        finally:
            getattr(answer, "close", lambda: None)()
        line, headers, exc_info = held
        if line.startswith("200"):
            comparison = self._compare(environ, primary, body, dict(headers).get(HEADER_LENGTH), tolerance)
            if comparison is not None:
                headers.append((COMPARISON, comparison.header()))
        start_response(line, headers, exc_info)
        return [body]

    def _split(self, environ: WSGIEnvironment) -> tuple[tuple[bytes, str | None], agreement.Tolerance]:
        """The primary's answer off the front of the body; the request's body left in its place."""
        try:
            total, length = int(environ.get("CONTENT_LENGTH") or 0), int(environ[PRIMARY_LENGTH])
        except ValueError:
            raise InvalidPayload("X-Mlmodel-Primary-Length and Content-Length must be numbers of bytes") from None
        if not 0 <= length <= total or total > 2 * self._state.settings.max_body_bytes:
            raise InvalidPayload(f"X-Mlmodel-Primary-Length {length} does not fit a body of {total} bytes")
        data = environ["wsgi.input"].read(total)
        environ["wsgi.input"] = io.BytesIO(data[length:])
        environ["CONTENT_LENGTH"] = str(total - length)
        tolerance = agreement.Tolerance.parse(environ.get(TOLERANCE, ""))
        return (data[:length], environ.get(PRIMARY_HEADER_LENGTH)), tolerance

    def _compare(
        self,
        environ: WSGIEnvironment,
        primary: tuple[bytes, str | None],
        body: bytes,
        header_length: str | None,
        tolerance: agreement.Tolerance,
    ) -> agreement.Comparison | None:
        path = environ.get("PATH_INFO", "")
        try:
            model, _, _ = self._state.ready()
            theirs = agreement.read(path, primary[0], primary[1])
            mine = agreement.read(path, body, header_length)
        except ServerError as error:
            fields = {"request_id": environ.get(REQUEST_ID), "error": error.message}
            log.warning("the primary's answer cannot be compared", extra={"fields": fields})
            return None
        return agreement.compare(theirs, mine, classifier=model.classes is not None, tolerance=tolerance)
