"""Cursor pagination: ``?limit=&cursor=`` in, ``{"items", "next_cursor"}`` out."""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import Any, Callable

import marshmallow as ma

from ..errors import InvalidInput
from ..services.pagination import Page

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
_CURSOR_VERSION = b"\x01"
# What encode_cursor produces: unpadded URL-safe base64 of the version byte
# and 16 id bytes (the first two characters carry the version); empty = start.
CURSOR_PATTERN = r"^(A[Q-Za-f][A-Za-z0-9_-]{21})?$"
_NOT_OUR_CURSOR = "is not a cursor returned by this list; start without one"


def encode_cursor(after: uuid.UUID) -> str:
    """An opaque cursor that continues after ``after``."""
    return base64.urlsafe_b64encode(_CURSOR_VERSION + after.bytes).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> uuid.UUID | None:
    """The id a cursor continues after; 422 naming ``cursor`` when it is not ours."""
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 17 or raw[:1] != _CURSOR_VERSION:
        raise InvalidInput("cursor", _NOT_OUR_CURSOR)
    return uuid.UUID(bytes=raw[1:])


class ListArgs(ma.Schema):
    """Query parameters every list accepts."""

    limit = ma.fields.Integer(
        load_default=DEFAULT_LIMIT,
        validate=ma.validate.Range(min=1, max=MAX_LIMIT),
        metadata={"description": f"Page size (1–{MAX_LIMIT}, default {DEFAULT_LIMIT})"},
    )
    cursor = ma.fields.String(
        load_default=None,
        validate=ma.validate.Regexp(CURSOR_PATTERN, error=_NOT_OUR_CURSOR),
        metadata={"description": "next_cursor of the previous page"},
    )


def page_schema(item_schema: type[ma.Schema], name: str) -> type[ma.Schema]:
    """A ``{"items": [...], "next_cursor"}`` schema for ``item_schema``."""
    return type(
        name,
        (ma.Schema,),
        {
            "items": ma.fields.List(ma.fields.Nested(item_schema), required=True),
            "next_cursor": ma.fields.String(allow_none=True, required=True),
        },
    )


def page_body(page: Page[Any], convert: Callable[[Any], Any] = lambda item: item) -> dict[str, Any]:
    """The response body of one page."""
    return {
        "items": [convert(item) for item in page.items],
        "next_cursor": encode_cursor(page.next_after) if page.next_after else None,
    }
