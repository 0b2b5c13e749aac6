"""Turn every error into an RFC 9457 problem document."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, json
from werkzeug.exceptions import HTTPException

from ..errors import PROBLEM_MIMETYPE, ApiError, flatten_messages, problem
from ..logging_setup import request_id_var

log = logging.getLogger("smartsvc.http")

# webargs nests messages under the request location; users know field names.
_LOCATIONS = {"json", "query", "querystring", "form", "files", "multipart", "headers", "view_args", "path"}

_MESSAGES = {
    404: "no such resource or route",
    405: "method not allowed on this resource",
    413: "request body is larger than the limit",
    429: "too many requests; retry after the time in Retry-After",
}


# RFC 9110 renamed 422; use the same title as InvalidInput raised by use cases.
_TITLES = {422: "Unprocessable Content"}


def problem_response(status: int, title: str, detail: str, errors: Any = None,
                     headers: dict[str, str] | None = None) -> Response:
    """A ``Response`` carrying a problem document."""
    body = problem(status, title, detail, errors=errors, request_id=request_id_var.get())
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM_MIMETYPE)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _field_errors(messages: Any) -> dict[str, list[str]]:
    if isinstance(messages, dict) and set(messages) <= _LOCATIONS:
        merged: dict[str, list[str]] = {}
        for value in messages.values():
            for key, items in flatten_messages(value).items():
                merged.setdefault(key, []).extend(items)
        return merged
    return flatten_messages(messages)


def handle_http_exception(error: HTTPException) -> Response:
    """Problem document for werkzeug errors, webargs validation included."""
    status = error.code or 500
    data = getattr(error, "data", None) or {}
    headers = dict(data.get("headers") or {})
    # werkzeug's own headers: Allow on 405 (RFC 9110 requires it), WWW-Authenticate, ...
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            headers.setdefault(name, value)
    if error.response is not None:  # e.g. the rate limiter's Retry-After
        for name in ("Retry-After",):
            if name in error.response.headers:
                headers[name] = error.response.headers[name]
    errors = None
    if "messages" in data or "errors" in data:
        errors = _field_errors(data.get("errors") or data.get("messages"))
    if errors:
        detail = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in errors.items())
    else:
        detail = data.get("message") or _MESSAGES.get(status) or (error.description or error.name)
    if status == 429 and "Retry-After" not in headers:
        headers["Retry-After"] = "60"
    return problem_response(status, _TITLES.get(status, error.name), detail, errors, headers)


def handle_api_error(error: ApiError) -> Response:
    """Problem document for a use case's error."""
    return problem_response(error.status, error.title, error.detail, error.errors or None, error.headers)


def handle_unexpected(error: Exception) -> Response:
    """Log the traceback; tell the user only that it failed and the request id."""
    if isinstance(error, HTTPException):
        return handle_http_exception(error)
    log.exception("unhandled error")
    return problem_response(500, "Internal Server Error", "the server failed; quote the request_id when reporting")


def register_problem_handlers(app: Flask) -> None:
    """Install the handlers on ``app`` (one error shape everywhere)."""
    app.register_error_handler(ApiError, handle_api_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)
