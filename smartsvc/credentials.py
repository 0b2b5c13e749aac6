"""Credentials: API keys (hashed at rest) and signed user access tokens.

Pure functions without I/O; the lookup of a presented credential lives in
:mod:`smartsvc.services.auth`.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

API_KEY_PREFIX = "ssk_"
ACCESS_TOKEN_PREFIX = "sat_"


@dataclass(frozen=True)
class NewApiKey:
    """A freshly generated key: ``plaintext`` is shown once, never stored."""

    plaintext: str
    prefix: str
    key_hash: str


def hash_api_key(plaintext: str) -> str:
    """SHA-256 of a key (keys carry 256 random bits, so no slow hash is needed)."""
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def generate_api_key() -> NewApiKey:
    """A new random API key with its display prefix and hash."""
    plaintext = API_KEY_PREFIX + secrets.token_urlsafe(32)
    return NewApiKey(plaintext=plaintext, prefix=plaintext[:12], key_hash=hash_api_key(plaintext))


@dataclass(frozen=True)
class AccessTokenClaims:
    """What a verified user access token says."""

    user_id: uuid.UUID
    generation: int


class InvalidToken(Exception):
    """The token is malformed, forged or expired; the message says which."""


class AccessTokens:
    """Issues and verifies short-lived, signed user access tokens."""

    def __init__(self, secret_key: str, ttl_s: int) -> None:
        self._serializer = URLSafeTimedSerializer(secret_key, salt="smartsvc.access-token")
        self.ttl_s = ttl_s

    def issue(self, user_id: uuid.UUID, generation: int) -> str:
        """A token for ``user_id`` valid for ``ttl_s`` seconds."""
        return ACCESS_TOKEN_PREFIX + self._serializer.dumps({"u": str(user_id), "g": generation})

    def verify(self, token: str) -> AccessTokenClaims:
        """The claims of a valid token, or :class:`InvalidToken`."""
        if not token.startswith(ACCESS_TOKEN_PREFIX):
            raise InvalidToken("not an access token")
        try:
            data = self._serializer.loads(token[len(ACCESS_TOKEN_PREFIX):], max_age=self.ttl_s)
        except SignatureExpired:
            raise InvalidToken("access token expired") from None
        except BadSignature:
            raise InvalidToken("access token is invalid") from None
        try:
            return AccessTokenClaims(user_id=uuid.UUID(data["u"]), generation=int(data["g"]))
        except (KeyError, TypeError, ValueError):
            raise InvalidToken("access token is invalid") from None
