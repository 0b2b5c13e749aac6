"""API key use cases: create, list, revoke."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select

from ..credentials import generate_api_key
from ..db import Database
from ..errors import InvalidInput, NotFound
from ..models import KEY_ROLES, ApiKey
from ..timeutil import utcnow
from .pagination import Page, keyset_page


@dataclass(frozen=True)
class CreatedKey:
    """A new key: ``plaintext`` is returned to the caller once and never stored."""

    key: ApiKey
    plaintext: str


def create_key(database: Database, role: str, name: str) -> CreatedKey:
    """Create an API key with ``role`` and a human ``name``."""
    if role not in KEY_ROLES:
        raise InvalidInput("role", f"must be one of {', '.join(KEY_ROLES)}")
    name = name.strip()
    if not name:
        raise InvalidInput("name", "must not be empty")
    generated = generate_api_key()
    with database.unit_of_work() as uow:
        assert uow.session is not None
        key = ApiKey(name=name, role=role, prefix=generated.prefix, key_hash=generated.key_hash)
        uow.session.add(key)
        uow.commit()
    return CreatedKey(key=key, plaintext=generated.plaintext)


def list_keys(database: Database, *, limit: int, cursor: uuid.UUID | None) -> Page[ApiKey]:
    """Keys in creation order, revoked ones included (they show ``revoked_at``)."""
    with database.session() as session:
        return keyset_page(session, select(ApiKey), ApiKey.id, limit=limit, after=cursor)


def get_key(database: Database, key_id: uuid.UUID) -> ApiKey:
    """One key by id."""
    with database.session() as session:
        key = session.get(ApiKey, key_id)
    if key is None:
        raise NotFound(f"API key {key_id} does not exist")
    return key


def revoke_key(database: Database, key_id: uuid.UUID) -> None:
    """Revoke a key: it stops working at once; the row stays for the audit trail."""
    with database.unit_of_work() as uow:
        assert uow.session is not None
        key = uow.session.get(ApiKey, key_id)
        if key is None:
            raise NotFound(f"API key {key_id} does not exist")
        if key.revoked_at is None:
            key.revoked_at = utcnow()
        uow.commit()
