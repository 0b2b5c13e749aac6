"""Cursors over a layer's features: the dataset paged through and the position of the last feature sent."""

from __future__ import annotations

import base64
import binascii
import struct
import uuid

from ..errors import InvalidInput

_VERSION = b"\x02"
_SEQ = struct.Struct(">I")
# Unpadded URL-safe base64 of the version byte, 16 dataset-id bytes and a 4-byte
# position: 28 characters, the first two carrying the version; empty = start.
FEATURE_CURSOR_PATTERN = r"^(A[g-v][A-Za-z0-9_-]{26})?$"
_NOT_OUR_CURSOR = "is not a cursor returned by this list; start without one"


def encode_feature_cursor(dataset_id: uuid.UUID, seq: int) -> str:
    """An opaque cursor continuing after feature ``seq`` of ``dataset_id``."""
    raw = _VERSION + dataset_id.bytes + _SEQ.pack(seq)
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_feature_cursor(cursor: str | None) -> tuple[uuid.UUID, int] | None:
    """``(dataset id, seq)`` from a cursor; None for no cursor; 422 naming ``cursor`` when it is not ours."""
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 1 + 16 + _SEQ.size or raw[:1] != _VERSION:
        raise InvalidInput("cursor", _NOT_OUR_CURSOR)
    return uuid.UUID(bytes=raw[1:17]), _SEQ.unpack(raw[17:])[0]
