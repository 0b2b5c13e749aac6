"""Per-request plumbing: request ids and one access-log line per request."""

from __future__ import annotations

import logging
import os
import re
import time

from flask import Flask, Response, current_app, g, request
from werkzeug.exceptions import RequestEntityTooLarge

from ..logging_setup import request_id_var, user_pseudonym
from .uploads import view_body_limit, view_reads_whole_body

log = logging.getLogger("smartsvc.access")
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")
_UUID_SEGMENT = re.compile(r"(?i)(?<=/)[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}(?=/|$)")


def _loggable_path() -> str:
    """The request path as the access log may keep it: without a user's id (TRUST.md "Erasure").

    A route argument naming a user is written as the user's log pseudonym;
    in a path that matched no route, any id-shaped segment becomes ``{id}``.
    """
    path = request.path
    if request.url_rule is None:
        return _UUID_SEGMENT.sub("{id}", path)
    for name, value in (request.view_args or {}).items():
        if "user" in name:
            key = current_app.extensions["smartsvc"].settings.secret_key
            path = re.sub(re.escape(str(value)), user_pseudonym(key, value), path, flags=re.IGNORECASE)
    return path


def _refuse_oversized_stream() -> None:
    """A chunked body (no Content-Length) over the limit is 413, not cut short.

    werkzeug stops reading a streamed body at ``MAX_CONTENT_LENGTH`` and hands
    over what it read, so the view would see a truncated body (at best a
    misleading 400 "Invalid JSON"). Read it here, bounded by the limit, and
    refuse it when more follows.
    """
    environ = request.environ
    # The cheapest test first: almost no request is chunked.
    if "chunked" not in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return
    limit = request.max_content_length
    if limit is None or request.content_length is not None:
        return  # a declared length is checked by werkzeug itself
    if "wsgi.input_terminated" not in environ:
        return  # werkzeug reads no body at all then
    if len(request.get_data(cache=True)) >= limit and environ["wsgi.input"].read(1):
        raise RequestEntityTooLarge()


# The fields every access record shares in this process (see _access_record), and the process they are for.
_access_template: tuple[int, dict[str, object]] | None = None


def _access_record(method: str, path: str, status: int, duration_ms: float | None,
                   principal: str | None) -> logging.LogRecord:
    """The access line's record: what ``log.info("request", extra=...)`` builds, from a per-process template.

    ``Logger.makeRecord`` works out the same process, thread and source fields for every line; copying them
    costs a third of that, on the one record every request writes (BENCHMARKS.md, 2).
    """
    global _access_template
    pid = os.getpid()
    if _access_template is None or _access_template[0] != pid:
        fields = log.makeRecord(log.name, logging.INFO, "(unknown file)", 0, "request", None, None,
                                "(unknown function)").__dict__
        _access_template = (pid, dict(fields))
    record = logging.LogRecord.__new__(logging.LogRecord)
    fields = record.__dict__
    fields.update(_access_template[1])
    now = time.time()
    fields["created"] = now
    fields["msecs"] = int((now - int(now)) * 1000) + 0.0
    fields["relativeCreated"] = (now - logging._startTime) * 1000  # type: ignore[attr-defined]
    fields["method"] = method
    fields["path"] = path
    fields["status"] = status
    fields["duration_ms"] = duration_ms
    fields["principal"] = principal
    return record


def new_request_id() -> str:
    """A random version-4 UUID as 32 hex digits: what ``uuid.uuid4().hex`` gives, without building a UUID."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return raw.hex()


def install_request_hooks(app: Flask) -> None:
    """Give every request an id (or keep the caller's) and log it when done."""
    # (endpoint, method) -> the matched view's own body limit and whether it reads the whole body: an app's
    # views and its (frozen) settings do not change once it serves, and a matched endpoint has finitely many
    # methods, so this stays as small as the route table.
    body_rules: dict[tuple[str, str], tuple[int | None, bool]] = {}

    @app.before_request
    def _start() -> None:
        req = request._get_current_object()  # type: ignore[attr-defined]
        globals_ = g._get_current_object()  # type: ignore[attr-defined]
        incoming = req.environ.get("HTTP_X_REQUEST_ID", "")
        request_id = incoming if _SANE_REQUEST_ID.match(incoming) else new_request_id()
        globals_.request_id = request_id
        globals_.request_token = request_id_var.set(request_id)
        globals_.request_started = time.perf_counter()
        endpoint = req.endpoint
        rule = body_rules.get((endpoint, req.method)) if endpoint else None
        if rule is None:
            own = view_body_limit()
            rule = (own, own is not None and view_reads_whole_body())
            if endpoint:
                body_rules[(endpoint, req.method)] = rule
        own_limit, whole_body = rule
        if own_limit is not None:
            # A large body: an upload is read as a stream by its view, stopped at the limit by werkzeug.
            req.max_content_length = own_limit
        if own_limit is None or whole_body:
            _refuse_oversized_stream()

    @app.after_request
    def _finish(response: Response) -> Response:
        globals_ = g._get_current_object()  # type: ignore[attr-defined]
        request_id = getattr(globals_, "request_id", None)
        if request_id:
            response.headers.add("X-Request-Id", request_id)  # only this hook writes it
        if not log.isEnabledFor(logging.INFO):
            return response
        started = getattr(globals_, "request_started", None)
        principal = getattr(globals_, "principal", None)
        log.handle(_access_record(
            request.method, _loggable_path(), response.status_code,
            round((time.perf_counter() - started) * 1000, 2) if started else None,
            principal.ident if principal else None))
        return response

    @app.teardown_request
    def _reset(_exc: BaseException | None) -> None:
        token = g.pop("request_token", None)
        if token is not None:
            request_id_var.reset(token)
