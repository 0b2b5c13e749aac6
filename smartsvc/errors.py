"""One error shape for everything: RFC 9457 ``application/problem+json``.

Use cases raise :class:`ApiError` subclasses (no Flask needed); the HTTP
layer turns them — and every werkzeug ``HTTPException``, marshmallow
validation error and unexpected exception — into a problem document.
"""

from __future__ import annotations

from typing import Any, Mapping

PROBLEM_MIMETYPE = "application/problem+json"


class ApiError(Exception):
    """An error with an HTTP status and a message for the user."""

    status = 400
    title = "Bad Request"

    def __init__(
        self,
        detail: str,
        *,
        errors: Mapping[str, list[str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = dict(errors or {})
        self.headers = dict(headers or {})


class InvalidInput(ApiError):
    """The request is well-formed but a field's value is not acceptable (422)."""

    status = 422
    title = "Unprocessable Content"

    def __init__(self, field: str, message: str, **kwargs: Any) -> None:
        super().__init__(f"{field}: {message}", errors={field: [message]}, **kwargs)


class NotFound(ApiError):
    """The object does not exist, or belongs to someone else (404)."""

    status = 404
    title = "Not Found"


class Conflict(ApiError):
    """The request conflicts with the current state (409)."""

    status = 409
    title = "Conflict"


class PayloadTooLarge(ApiError):
    """The request body is over the limit (413); nothing of it was kept."""

    status = 413
    title = "Request Entity Too Large"  # the title werkzeug gives its own 413s


class Forbidden(ApiError):
    """The caller is known but may not do this (403)."""

    status = 403
    title = "Forbidden"


class Unauthorized(ApiError):
    """No valid credentials (401)."""

    status = 401
    title = "Unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="smartsvc"'})


def flatten_messages(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """Flatten marshmallow's nested error dict into ``{"a.b.0.c": [msg, ...]}``."""
    flat: dict[str, list[str]] = {}
    if isinstance(messages, Mapping):
        for key, value in messages.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if key == "_schema":
                name = prefix or "body"
            for sub_key, sub_messages in flatten_messages(value, name).items():
                flat.setdefault(sub_key, []).extend(sub_messages)
    elif isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        flat[prefix or "body"] = list(messages)
    elif isinstance(messages, list):
        for item in messages:
            for sub_key, sub_messages in flatten_messages(item, prefix).items():
                flat.setdefault(sub_key, []).extend(sub_messages)
    else:
        flat[prefix or "body"] = [str(messages)]
    return flat


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    errors: Mapping[str, list[str]] | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """The problem document for an error."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = dict(errors)
    if request_id:
        body["request_id"] = request_id
    return body
