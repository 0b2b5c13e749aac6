"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

Each delivery carries ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and
``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``, one
per active secret, separated by spaces, so that during a secret rotation a
partner verifying with either the old or the new secret accepts it. Signing is
done by the ``standardwebhooks`` library itself, so a partner's
``standardwebhooks.Webhook(secret).verify(body, headers)`` agrees by
construction.
"""

from __future__ import annotations

import base64
import binascii
import math
import secrets as _random
from datetime import datetime, timezone

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
# A header with more signatures than this is a bug in the caller (rotation keeps two).
MAX_SECRETS = 5


def new_secret() -> str:
    """A new signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(_random.token_bytes(SECRET_BYTES)).decode("ascii")


def is_valid_secret(secret: str) -> bool:
    """True for a ``whsec_`` secret whose key is valid base64 of 24 to 64 bytes."""
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        return False
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        return False
    return 24 <= len(key) <= 64


def sign_headers(message_id: str, timestamp: datetime, body: bytes, secrets: list[str]) -> dict[str, str]:
    """The Standard Webhooks headers for one message, signed with every secret given (in order).

    ``timestamp`` must be timezone-aware (it is sent as whole Unix seconds);
    ``body`` must be UTF-8 (the specification signs text); ``message_id`` is the
    same on every retry of a message so partners can deduplicate.
    """
    if not message_id or any(ch in message_id for ch in " ,.\r\n"):
        raise ValueError("message_id must be non-empty without spaces, commas, dots or line breaks")
    if timestamp.tzinfo is None:
        raise ValueError("timestamp must be timezone-aware")
    if not 1 <= len(secrets) <= MAX_SECRETS:
        raise ValueError(f"secrets: between 1 and {MAX_SECRETS} are needed")
    text = body.decode("utf-8")  # raises for a body that is not UTF-8
    # The library reads the time as UTC wall-clock; give it UTC so other zones sign the same instant.
    at = timestamp.astimezone(timezone.utc)
    signatures = []
    for secret in secrets:
        if not is_valid_secret(secret):
            raise ValueError("secrets: each must be 'whsec_' + base64 of 24 to 64 bytes")
        signatures.append(Webhook(secret).sign(msg_id=message_id, timestamp=at, data=text))
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(math.floor(at.timestamp())),
        "webhook-signature": " ".join(signatures),
    }
