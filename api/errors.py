"""The one place where errors become HTTP answers.

Every error response has the shape ``{"error": {"code", "message", "details"}}``
(docs/api.md). Engine errors (``search.errors``) map by their ``code``, HTTP
errors raised by Flask or werkzeug (unknown route, wrong method, body too
large) by their status, and anything unexpected is a 500 ``internal`` whose
details stay in the log, not in the answer.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g, jsonify
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from search.errors import SieveError

log = logging.getLogger(__name__)

# Engine error code -> (HTTP status, API error code).
ENGINE_ERRORS: dict[str, tuple[int, str]] = {
    "invalid_request": (422, "invalid_request"),
    "load_error": (422, "invalid_request"),
    "indexing_failed": (422, "invalid_request"),
    "not_found": (404, "not_found"),
    "conflict": (409, "conflict"),
    "backend_unavailable": (503, "backend_unavailable"),
    # The registry cannot be trusted: the service is unavailable until it is restored.
    "registry_corrupt": (503, "registry_corrupt"),
    "registry_mismatch": (503, "registry_mismatch"),
    "model_not_found": (503, "backend_unavailable"),
    "model_incompatible": (503, "backend_unavailable"),
}

# Engine codes of a 503 that a retry can cure (a backend down or late): only those
# carry Retry-After. A missing or unusable model, or a registry to restore, needs
# an operator, and a Retry-After there would keep clients retrying forever.
RETRYABLE = {"backend_unavailable"}
RETRY_AFTER_S = 5

# HTTP status -> API error code, for errors that did not come from the engine.
HTTP_CODES: dict[int, str] = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "invalid_request",
    409: "conflict",
    413: "payload_too_large",
    415: "invalid_request",
    422: "invalid_request",
    429: "rate_limited",
    503: "backend_unavailable",
}


class ApiError(Exception):
    """An error the API raises itself: a status, a stable code and a one-line message."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or HTTP_CODES.get(status, "internal")
        self.message = message
        self.headers = headers or {}
        self.details = details


def error_response(
    status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> Response:
    """The JSON error body with its status."""
    response = jsonify({"error": {"code": code, "message": message, "details": details or {}}})
    response.status_code = status
    return response


def _json_safe(data: dict[str, Any]) -> dict[str, Any]:
    """Engine error data as JSON scalars (it may hold paths or other objects)."""
    safe: dict[str, Any] = {}
    for key, value in data.items():
        if value is None or isinstance(value, str | int | float | bool):
            safe[key] = value
        elif isinstance(value, list | tuple) and all(isinstance(v, str | int) for v in value):
            safe[key] = list(value)
        else:
            safe[key] = str(value)
    return safe


def _validation(exc: ValidationError) -> Response:
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    if any(err["type"] == "json_invalid" for err in errors):
        return error_response(400, "invalid_request", "the request body is not valid JSON")
    fields = [
        {"loc": [str(part) for part in err["loc"]], "message": err["msg"], "type": err["type"]}
        for err in errors
    ]
    first = fields[0]
    where = ".".join(first["loc"]) or "body"
    return error_response(
        422, "invalid_request", f"{where}: {first['message']}", {"errors": fields}
    )


def _retryable(exc: SieveError) -> bool:
    """A 503 a retry can cure: not a model that is missing or unusable (even when wrapped)."""
    cause = exc.__cause__
    if isinstance(cause, SieveError) and cause.code not in RETRYABLE:
        return False
    return exc.code in RETRYABLE


def set_retry_after(response: Response, seconds: int | str) -> None:
    """Give a 503 its Retry-After, remembered so that ``api.ratelimit`` keeps it as set."""
    response.headers["Retry-After"] = str(seconds)
    g.sieve_retry_after = str(seconds)


def own_retry_after() -> str | None:
    """The Retry-After this request's error set (``set_retry_after``), if any."""
    value: str | None = g.get("sieve_retry_after")
    return value


def register_error_handlers(app: Flask) -> None:
    """Install the handlers on ``app``."""

    @app.errorhandler(ApiError)
    def _api(exc: ApiError) -> Response:
        response = error_response(exc.status, exc.code, exc.message, exc.details)
        response.headers.update(exc.headers)
        if exc.status == 503 and "Retry-After" in exc.headers:
            set_retry_after(response, exc.headers["Retry-After"])
        return response

    @app.errorhandler(ValidationError)
    def _pydantic(exc: ValidationError) -> Response:
        return _validation(exc)

    @app.errorhandler(SieveError)
    def _engine(exc: SieveError) -> Response:
        status, code = ENGINE_ERRORS.get(exc.code, (500, "internal"))
        if status >= 500:
            log.error("%s: %s", type(exc).__name__, exc)
        response = error_response(status, code, str(exc), _json_safe(exc.data))
        if status == 503 and _retryable(exc):
            set_retry_after(response, RETRY_AFTER_S)
        return response

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        if status == 413:
            message = f"the request body is larger than {app.config['MAX_CONTENT_LENGTH']} bytes"
        elif status == 404:
            message = "no such endpoint"
        elif status == 405:
            message = "method not allowed on this endpoint"
        else:
            message = exc.description or exc.name
        response = error_response(status, HTTP_CODES.get(status, "internal"), message)
        for name, value in exc.get_headers():
            if name.lower() not in ("content-type", "content-length"):
                response.headers[name] = value  # Allow (405), Retry-After (429)
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        # The traceback goes to the log; the caller learns only that it was ours.
        log.exception("unhandled error")
        return error_response(500, "internal", "internal error; see the server log")
