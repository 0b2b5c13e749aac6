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


# Tokens verified by this process, kept a short while: a client sends the same token with every request.
_VERIFIED_MAX = 10_000
# How long a verified token is remembered. The cache holds user ids, and an erased user must leave every
# cache the service owns within minutes (TRUST.md), including those of processes that never see the
# token again; one signature check per token and minute costs nothing.
VERIFIED_KEEP_S = 60.0


class AccessTokens:
    """Issues and verifies short-lived, signed user access tokens."""

    def __init__(self, secret_key: str, ttl_s: int) -> None:
        self._serializer = URLSafeTimedSerializer(secret_key, salt="smartsvc.access-token")
        self.ttl_s = ttl_s
        # token -> (claims, expiry, kept until), times as time.time(): the signature of a token string is
        # checked once a minute (~25-50 us of HMAC, base64 and JSON per request otherwise); expiry on every use.
        self._verified: dict[str, tuple[AccessTokenClaims, float, float]] = {}
        self._next_sweep = 0.0

    def issue(self, user_id: uuid.UUID, generation: int) -> str:
        """A token for ``user_id`` valid for ``ttl_s`` seconds."""
        return ACCESS_TOKEN_PREFIX + self._serializer.dumps({"u": str(user_id), "g": generation})

    def verify(self, token: str) -> AccessTokenClaims:
        """The claims of a valid token, or :class:`InvalidToken`.

        Revocation is not decided here: the caller compares ``generation``
        with the user's current one (:mod:`smartsvc.services.auth`).
        """
        now = time.time()
        if now >= self._next_sweep:
            self._sweep(now)
        known = self._verified.get(token)
        if known is not None:
            claims, expires_at, kept_until = known
            if now > expires_at:
                self._verified.pop(token, None)
                raise InvalidToken("access token expired")
            if now <= kept_until:
                return claims
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
        self._verified[token] = (claims, signed_at.timestamp() + self.ttl_s, now + VERIFIED_KEEP_S)
        return claims

    def forget(self, token: str) -> None:
        """Drop a token from the cache (it was found revoked)."""
        self._verified.pop(token, None)

    def forget_user(self, user_id: uuid.UUID) -> None:
        """Drop every cached token of ``user_id`` (the user is being erased)."""
        for token in [t for t, entry in self._verified.items() if entry[0].user_id == user_id]:
            self._verified.pop(token, None)

    def cached_user_ids(self) -> set[uuid.UUID]:
        """The users this process currently remembers a token of (for erasure tests and audits)."""
        return {entry[0].user_id for entry in list(self._verified.values())}

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + VERIFIED_KEEP_S / 4
        for token in [t for t, entry in self._verified.items() if entry[2] < now]:
            self._verified.pop(token, None)
