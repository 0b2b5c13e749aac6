"""``Idempotency-Key`` on creating POSTs: a repeat within 24 h gets the first answer."""

from __future__ import annotations

import functools
import hashlib
import re
from typing import Any, Callable

from flask import Response, current_app, json, request
from flask_smorest import Blueprint

from ..errors import InvalidInput
from ..services import idempotency
from .api import current_principal

HEADER = "Idempotency-Key"
_MAX_KEY_LENGTH = 200
# Visible ASCII, spaces only inside (HTTP strips them at the ends anyway).
_KEY_PATTERN = rf"^[!-~]([ -~]{{0,{_MAX_KEY_LENGTH - 2}}}[!-~])?$"

Replay = Callable[[dict[str, Any]], dict[str, Any]]
Headers = Callable[[dict[str, Any]], dict[str, str]]


def body_fingerprint() -> str:
    """The hash that tells two requests apart: of the raw body (JSON requests)."""
    return hashlib.sha256(request.get_data()).hexdigest()


def multipart_fingerprint() -> str:
    """The hash of a multipart body's fields and files, read from where they were spooled.

    Hashing ``request.get_data()`` would hold a whole upload in memory.
    """
    digest = hashlib.sha256()
    for name, value in sorted(request.form.items(multi=True)):
        digest.update(json.dumps(["field", name, value]).encode())
    for name, storage in sorted(request.files.items(multi=True), key=lambda item: (item[0], item[1].filename or "")):
        content = hashlib.sha256()
        stream = storage.stream
        while chunk := stream.read(1 << 20):
            content.update(chunk)
        stream.seek(0)
        digest.update(json.dumps(["file", name, storage.filename, content.hexdigest()]).encode())
    return digest.hexdigest()


def idempotent(
    *,
    secret_fields: tuple[str, ...] = (),
    replay: Replay | None = None,
    fingerprint: Callable[[], str] = body_fingerprint,
    replay_headers: Headers | None = None,
) -> Callable[..., Any]:
    """Make a creating view idempotent per caller and key.

    ``secret_fields`` are never stored; ``replay`` fills them in again on a
    repeat (e.g. a fresh access token for the same user). ``fingerprint``
    hashes the request (:func:`multipart_fingerprint` for uploads);
    ``replay_headers`` gives a repeat the headers of the first answer
    (e.g. ``Location``) from its stored body.
    """

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            key = request.headers.get(HEADER)
            if key is None:
                return view(*args, **kwargs)
            if not re.fullmatch(_KEY_PATTERN, key):
                raise InvalidInput(HEADER, f"must be 1–{_MAX_KEY_LENGTH} printable ASCII characters")
            database = current_app.extensions["smartsvc"].database
            principal = current_principal()
            request_hash = fingerprint()
            record = idempotency.find_record(database, principal.ident, key)
            if record is not None:
                if record.request_hash != request_hash or record.path != request.path:
                    raise InvalidInput(HEADER, "was already used with a different request")
                body = replay(dict(record.response_body)) if replay else record.response_body
                response = Response(json.dumps(body), status=record.status_code, mimetype="application/json")
                response.headers["Idempotent-Replayed"] = "true"
                if replay_headers is not None:
                    response.headers.update(replay_headers(body))
                return response
            response = view(*args, **kwargs)
            if isinstance(response, Response) and 200 <= response.status_code < 300:
                body = response.get_json(silent=True) or {}
                stored = {k: v for k, v in body.items() if k not in secret_fields}
                idempotency.save_record(
                    database, principal=principal.ident, key=key, method=request.method,
                    path=request.path, request_hash=request_hash, status_code=response.status_code,
                    body=stored, user_id=principal.user_id,
                )
            return response

        return Blueprint.doc(parameters=[IDEMPOTENCY_PARAMETER])(wrapper)

    return decorator


IDEMPOTENCY_PARAMETER = {
    "in": "header",
    "name": HEADER,
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": _MAX_KEY_LENGTH, "pattern": _KEY_PATTERN},
    "description": "Repeat a create safely: the same key within 24 h returns the first result.",
}
