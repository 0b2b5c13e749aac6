"""Large request bodies: a view's own body limit, and uploaded files spooled where they will be kept.

The app-wide ``SMARTSVC_MAX_BODY_BYTES`` (1 MiB) stays the limit everywhere
else. A view decorated with :func:`large_upload` declares its own limit: the
request hooks apply it before anything reads the body (a chunked body is then
not buffered in memory; werkzeug stops it at the limit with a 413 while
parsing), and its uploaded files are spooled to disk in the given folder
rather than in ``/tmp`` (often a RAM disk) or in memory. A view decorated
with :func:`large_body` only has a larger limit for a body it reads whole
(JSON).
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

from flask import Request, current_app, request

from ..config import Settings

# Files up to this size stay in memory while the form is parsed (werkzeug's own threshold).
_IN_MEMORY_BYTES = 500 * 1024
_LIMIT_ATTRIBUTE = "smartsvc_body_limit"
_WHOLE_BODY_ATTRIBUTE = "smartsvc_whole_body"

SettingBytes = Callable[[Settings], int]
SettingFolder = Callable[[Settings], Path]


class UploadRequest(Request):
    """Flask's request; a view may set ``spool_dir`` to have uploaded files spooled there."""

    spool_dir: Path | None = None

    def _get_file_stream(
        self, total_content_length: int | None, content_type: str | None, filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        small = total_content_length is not None and total_content_length <= _IN_MEMORY_BYTES
        if self.spool_dir is None or small:
            return super()._get_file_stream(total_content_length, content_type, filename, content_length)
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        # Anonymous: the file disappears when closed, whatever happens to the request.
        return tempfile.TemporaryFile("rb+", dir=self.spool_dir)


def large_upload(limit: SettingBytes, spool_dir: SettingFolder) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The view accepts bodies up to ``limit(settings)`` bytes, its files spooled in ``spool_dir(settings)``."""

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            settings = current_app.extensions["smartsvc"].settings
            request.max_content_length = limit(settings)
            request.spool_dir = spool_dir(settings)
            return view(*args, **kwargs)

        setattr(wrapper, _LIMIT_ATTRIBUTE, limit)
        return wrapper

    return decorator


def large_body(limit: SettingBytes) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The view accepts a (JSON) body up to ``limit(settings)`` bytes, read whole like any other body.

    For bodies that are large but not uploads, such as a 10,000-vertex
    polygon: nothing is spooled, and a chunked body past the limit is 413
    like everywhere else.
    """

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            request.max_content_length = limit(current_app.extensions["smartsvc"].settings)
            return view(*args, **kwargs)

        setattr(wrapper, _LIMIT_ATTRIBUTE, limit)
        setattr(wrapper, _WHOLE_BODY_ATTRIBUTE, True)
        return wrapper

    return decorator


def _view_handler() -> Any:
    view = current_app.view_functions.get(request.endpoint or "")
    view_class = getattr(view, "view_class", None)
    return getattr(view_class, request.method.lower(), None) if view_class is not None else view


def view_reads_whole_body() -> bool:
    """True when the view matched by this request declared its limit with :func:`large_body` (not an upload)."""
    return bool(getattr(_view_handler(), _WHOLE_BODY_ATTRIBUTE, False))


def view_body_limit() -> int | None:
    """The body limit the view matched by this request declared (:func:`large_upload`, :func:`large_body`), if any."""
    limit = getattr(_view_handler(), _LIMIT_ATTRIBUTE, None)
    if limit is None:
        return None
    return int(limit(current_app.extensions["smartsvc"].settings))
