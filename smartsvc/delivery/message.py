"""What a push carries, what a provider answers, and the 4 KB limit on the encoded payload."""

from __future__ import annotations

import dataclasses
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping

# Every provider's limit on the encoded payload (FCM and APNs: 4096 bytes).
MAX_PAYLOAD_BYTES = 4096
ELLIPSIS = "…"


@dataclass(frozen=True)
class PushMessage:
    """One push of one suggestion to one device, provider-neutral.

    The phone gets the ids, the text and the collapse key; it reads the rest
    (payload, reason) from ``GET /v1/me/suggestions/{id}``.
    """

    user_id: uuid.UUID
    device_id: uuid.UUID
    platform: str
    suggestion_id: uuid.UUID
    kind: str
    title: str
    body: str
    collapse_key: str
    expires_at: datetime
    at: datetime
    # The device's address at its push service: an FCM/APNs token or a Web Push subscription.
    token: str | None = None
    subscription: dict[str, Any] | None = None

    def data(self) -> dict[str, Any]:
        """The payload the phone receives (what the 4 KB limit applies to)."""
        return {
            "suggestion_id": str(self.suggestion_id), "kind": self.kind, "title": self.title, "body": self.body,
            "collapse_key": self.collapse_key, "expires_at": self.expires_at.isoformat(),
        }

    def encoded_size(self) -> int:
        """Bytes of :meth:`data` as compact UTF-8 JSON."""
        return len(json.dumps(self.data(), ensure_ascii=False, separators=(",", ":")).encode())


@dataclass(frozen=True)
class PushResult:
    """What a provider made of one push.

    ``status`` is ``sent`` or ``failed``; ``token_dead`` says the push
    service no longer knows the device (it is then deactivated, unless the
    device registered again after ``token_dead_since``, APNs' timestamp).
    ``retryable`` says a later try may succeed (quota, 429, 5xx, network);
    ``retry_after_s`` is the wait the push service asked for, if any.
    ``status_code`` is the push service's HTTP status (None: no answer).
    """

    status: str
    latency_ms: int
    error: str | None = None
    token_dead: bool = False
    token_dead_since: datetime | None = None
    retryable: bool = False
    retry_after_s: float | None = None
    status_code: int | None = None

    @property
    def ok(self) -> bool:
        """True when the push service accepted the push."""
        return self.status == "sent"


def _shorten(message: PushMessage, field: str, limit: int) -> PushMessage:
    """Cut ``field`` to the longest prefix (ending in "…") that keeps the message within ``limit``."""
    text = getattr(message, field)
    low, high = 0, len(text)  # the prefix length: ``low`` fits (or is 0), ``high`` is the upper bound
    while low < high:
        middle = (low + high + 1) // 2
        candidate = dataclasses.replace(message, **{field: text[:middle] + ELLIPSIS})
        if candidate.encoded_size() <= limit:
            low = middle
        else:
            high = middle - 1
    return dataclasses.replace(message, **{field: text[:low] + ELLIPSIS if low or text else ""})


def json_size_bound(*parts: Mapping[str, str]) -> int:
    """Bytes that ``parts`` (flat mappings of strings) cannot exceed, each encoded as compact UTF-8 JSON.

    A character takes at most 6 bytes (``\\u001f``; 4 in UTF-8), an item at most 6 more (quotes, colon,
    comma), a mapping 2 (braces). Cheaper than encoding: a payload far below its limit, as nearly every
    push is, need not be encoded to be measured.
    """
    bound = 0
    for part in parts:
        bound += 2 + sum(6 * (len(key) + len(value)) + 6 for key, value in part.items())
    return bound


def fit_payload(message: PushMessage, limit: int = MAX_PAYLOAD_BYTES) -> PushMessage:
    """``message`` within ``limit`` bytes once encoded: the body is trimmed first, then the title, never the ids."""
    if json_size_bound(message.data()) <= limit or message.encoded_size() <= limit:
        return message
    message = _shorten(message, "body", limit)
    if message.encoded_size() <= limit:
        return message
    message = dataclasses.replace(message, body="")
    return _shorten(message, "title", limit)
