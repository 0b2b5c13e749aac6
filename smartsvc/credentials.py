"""Credentials: API keys (hashed at rest) and signed user access tokens.

Pure functions without I/O; the lookup of a presented credential lives in
:mod:`smartsvc.services.auth`.
"""

from __future__ import annotations

import hashlib
import secrets
import time
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


# Tokens verified by this process, kept until they expire: a client sends the same token with every request.
_VERIFIED_MAX = 10_000


class AccessTokens:
    """Issues and verifies short-lived, signed user access tokens."""

    def __init__(self, secret_key: str, ttl_s: int) -> None:
        self._serializer = URLSafeTimedSerializer(secret_key, salt="smartsvc.access-token")
        self.ttl_s = ttl_s
        # token -> (claims, expiry as time.time()): the signature of a token string is checked once
        # (~25-50 us of HMAC, base64 and JSON per request otherwise); its expiry on every use.
        self._verified: dict[str, tuple[AccessTokenClaims, float]] = {}

    def issue(self, user_id: uuid.UUID, generation: int) -> str:
        """A token for ``user_id`` valid for ``ttl_s`` seconds."""
        return ACCESS_TOKEN_PREFIX + self._serializer.dumps({"u": str(user_id), "g": generation})

    def verify(self, token: str) -> AccessTokenClaims:
        """The claims of a valid token, or :class:`InvalidToken`.

        Revocation is not decided here: the caller compares ``generation``
        with the user's current one (:mod:`smartsvc.services.auth`).
        """
        known = self._verified.get(token)
        if known is not None:
            if time.time() <= known[1]:
                return known[0]
            self._verified.pop(token, None)
            raise InvalidToken("access token expired")
        if not token.startswith(ACCESS_TOKEN_PREFIX):
            raise InvalidToken("not an access token")
        try:
            data, signed_at = self._serializer.loads(token[len(ACCESS_TOKEN_PREFIX):], max_age=self.ttl_s,
                                                     return_timestamp=True)
        except SignatureExpired:
            raise InvalidToken("access token expired") from None
        except BadSignature:
            raise InvalidToken("access token is invalid") from None
        try:
            claims = AccessTokenClaims(user_id=uuid.UUID(data["u"]), generation=int(data["g"]))
        except (KeyError, TypeError, ValueError):
            raise InvalidToken("access token is invalid") from None
        if len(self._verified) >= _VERIFIED_MAX:
            self._verified.clear()
        self._verified[token] = (claims, signed_at.timestamp() + self.ttl_s)
        return claims
