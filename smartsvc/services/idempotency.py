"""Stored first responses of POSTs sent with an ``Idempotency-Key``."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from ..db import Database
from ..models import IdempotencyRecord
from ..timeutil import utcnow

RETENTION = timedelta(hours=24)


def find_record(database: Database, principal: str, key: str) -> IdempotencyRecord | None:
    """The record of ``key`` for ``principal`` if one is younger than 24 h."""
    with database.session() as session:
        record = session.scalar(
            select(IdempotencyRecord).where(
                IdempotencyRecord.principal == principal, IdempotencyRecord.key == key
            )
        )
    if record is None or utcnow() - record.created_at > RETENTION:
        return None
    return record


def save_record(
    database: Database,
    *,
    principal: str,
    key: str,
    method: str,
    path: str,
    request_hash: str,
    status_code: int,
    body: dict[str, Any],
    user_id: uuid.UUID | None,
) -> None:
    """Remember the first response; an expired record with the same key is replaced."""
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        session.execute(
            delete(IdempotencyRecord).where(
                IdempotencyRecord.principal == principal,
                IdempotencyRecord.key == key,
                IdempotencyRecord.created_at < utcnow() - RETENTION,
            )
        )
        session.add(
            IdempotencyRecord(
                principal=principal, key=key, method=method, path=path, request_hash=request_hash,
                status_code=status_code, response_body=body, user_id=user_id,
            )
        )
        try:
            uow.commit()
        except IntegrityError:
            pass  # a concurrent request with the same key stored its answer first


def purge_expired(database: Database) -> int:
    """Delete records older than 24 h; returns how many."""
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        result = session.execute(
            delete(IdempotencyRecord).where(IdempotencyRecord.created_at < utcnow() - RETENTION)
        )
        uow.commit()
    return int(getattr(result, "rowcount", 0) or 0)
