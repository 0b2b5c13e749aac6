"""Write a trigger and the outbox message that runs the rules on it, in the caller's transaction.

Every producer of triggers (the context batch, the telemetry worker, the
scheduler, the geofence timer) calls :func:`emit_trigger`; the engine
(:data:`HANDLE_TASK`) picks each one up after the commit. A trigger whose
``dedupe_key`` was already written is not written again and queues nothing:
noticing the same situation twice runs the rules once.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Mapping

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..db import UnitOfWork
from ..ids import new_id
from ..models.triggers import TriggerRecord
from ..timeutil import utcnow
from . import outbox
from .webhook_events import emit_trigger_event

# The Celery task that runs the rules on one trigger (workers/tasks/engine.py).
HANDLE_TASK = "smartsvc.engine.handle_trigger"


def emit_trigger(
    uow: UnitOfWork,
    *,
    user_id: uuid.UUID,
    event: str,
    at: datetime,
    dedupe_key: str,
    fields: Mapping[str, Any] | None = None,
    rule_id: uuid.UUID | None = None,
    product_id: uuid.UUID | None = None,
) -> uuid.UUID | None:
    """Record a trigger and enqueue its rules; the new trigger's id, or None when ``dedupe_key`` was seen.

    ``fields`` are the trigger's ``event.*`` facts without the prefix
    (JSON values only); ``rule_id`` limits the trigger to one rule.
    The outbox message is ordered per user, so one user's triggers run in
    the order they were noticed.
    """
    session = uow.session
    assert session is not None
    trigger_id = new_id()
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    row = {
        "id": trigger_id, "user_id": user_id, "event": event, "rule_id": rule_id, "product_id": product_id,
        "fields": dict(fields or {}), "at": at, "dedupe_key": dedupe_key, "created_at": utcnow(),
    }
    inserted = session.execute(
        insert(TriggerRecord).values(**row).on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(TriggerRecord.id)
    ).scalar()
    if inserted is None:
        return None
    outbox.enqueue(uow, HANDLE_TASK, {"trigger_id": str(trigger_id)}, ordering_key=f"user:{user_id}",
                   user_id=user_id)
    emit_trigger_event(uow, user_id=user_id, event=event, at=at, fields=fields, product_id=product_id)
    return trigger_id


def trigger_seen(uow: UnitOfWork, dedupe_key: str) -> bool:
    """Whether a trigger with ``dedupe_key`` was written already (this transaction included)."""
    assert uow.session is not None
    return uow.session.scalar(select(TriggerRecord.id).where(TriggerRecord.dedupe_key == dedupe_key)) is not None
