"""Who is calling: resolve a bearer credential into a :class:`Principal`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Uuid, bindparam, select, text, update

from ..credentials import ACCESS_TOKEN_PREFIX, AccessTokens, InvalidToken, hash_api_key
from ..db import Database
from ..errors import Unauthorized
from ..models import ApiKey
from ..timeutil import utcnow

USER_ROLE = "user"
_TOKEN_GENERATION = text("SELECT token_generation FROM users WHERE id = :user_id").bindparams(
    bindparam("user_id", type_=Uuid))
# What a signed token whose user was deleted, or whose generation was bumped since, is answered.
REVOKED_TOKEN_MESSAGE = "access token is no longer valid"
# Writing last_used_at on every request would turn reads into writes.
_LAST_USED_RESOLUTION = timedelta(minutes=5)


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: an API key with a role, or a user."""

    role: str
    key_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None

    @property
    def ident(self) -> str:
        """A stable string naming the caller (idempotency keys, rate limits)."""
        return f"user:{self.user_id}" if self.user_id else f"key:{self.key_id}"


def authenticate(database: Database, tokens: AccessTokens, credential: str) -> Principal:
    """The principal behind a bearer credential, or :class:`Unauthorized`."""
    if credential.startswith(ACCESS_TOKEN_PREFIX):
        return _authenticate_user(database, tokens, credential)
    return _authenticate_key(database, credential)


def _authenticate_user(database: Database, tokens: AccessTokens, token: str) -> Principal:
    try:
        claims = tokens.verify(token)
    except InvalidToken as exc:
        raise Unauthorized(str(exc)) from None
    # On every request with a user token: a plain query on a connection, not an ORM session (~2.5× cheaper).
    with database.engine.connect() as connection:
        generation = connection.execute(_TOKEN_GENERATION, {"user_id": claims.user_id}).scalar()
    if generation is None or generation != claims.generation:
        tokens.forget(token)
        raise Unauthorized(REVOKED_TOKEN_MESSAGE)
    return Principal(role=USER_ROLE, user_id=claims.user_id)


def _authenticate_key(database: Database, plaintext: str) -> Principal:
    if len(plaintext) > 200:
        raise Unauthorized("credential is invalid")
    key_hash = hash_api_key(plaintext)
    with database.session() as session:
        key = session.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash))
    if key is None or key.revoked_at is not None:
        raise Unauthorized("credential is invalid or revoked")
    now = utcnow()
    if key.last_used_at is None or now - key.last_used_at > _LAST_USED_RESOLUTION:
        with database.unit_of_work() as uow:
            assert uow.session is not None
            uow.session.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now))
            uow.commit()
    return Principal(role=key.role, key_id=key.id)
