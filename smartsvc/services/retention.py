"""Retention (TRUST.md "Erasure and retention"): location history and context events are kept for a while only.

The daily task (:func:`purge_expired_context`) deletes, in bounded batches
(one transaction each, so the database is never held for long):

- ``context_events`` whose ``at`` is older than ``SMARTSVC_RETENTION_DAYS``
  (locations, trips, activities, screens);
- triggers the rules already ran on, noticed that long ago (their fields
  carry fences and distances derived from the locations);
- the last fix and the active trip of a user context whose fix is that old
  (a position that old is history too; the context keeps the rest).

Idempotent: a second run (or two at once) finds nothing more to delete.
Coordinates are stored rounded to 6 decimals by the context ingest
(:func:`smartsvc.services.context_state.round_coordinate`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, select

from ..db import Database
from ..models import ContextEvent, TriggerRecord, UserContext
from ..timeutil import utcnow
from .context_state import parse_time

BATCH = 1000


@dataclass(frozen=True)
class RetentionReport:
    """What one run deleted: context events, processed triggers, and stale last fixes cleared."""

    context_events: int
    triggers: int
    last_fixes: int


def _delete_batches(database: Database, model: Any, condition: ColumnElement[bool], batch: int) -> int:
    deleted = 0
    while True:
        with database.unit_of_work() as uow:
            session = uow.session
            assert session is not None
            chosen = select(model.id).where(condition).limit(batch).scalar_subquery()
            result = session.execute(delete(model).where(model.id.in_(chosen)).execution_options(
                synchronize_session=False))
            count = int(getattr(result, "rowcount", 0) or 0)
            uow.commit()
        deleted += count
        if count < batch:
            return deleted


def _clear_stale_fixes(database: Database, cutoff: datetime, batch: int) -> int:
    """Forget last fixes (and the trip measured against them) older than ``cutoff``; how many contexts."""
    cleared = 0
    after = None
    while True:
        query = select(UserContext.user_id).where(UserContext.fix.is_not(None)).order_by(UserContext.user_id)
        if after is not None:
            query = query.where(UserContext.user_id > after)
        with database.session() as session:
            candidates = list(session.scalars(query.limit(batch)))
        if not candidates:
            return cleared
        after = candidates[-1]
        with database.unit_of_work() as uow:
            session = uow.session
            assert session is not None
            for user_id in candidates:
                context = session.get(UserContext, user_id, with_for_update=True, populate_existing=True)
                fix_at = parse_time(context.fix.get("at")) if context is not None and context.fix else None
                if fix_at is not None and fix_at < cutoff:
                    context.fix = context.trip = None
                    context.speed_mps = None
                    cleared += 1
            uow.commit()


def purge_expired_context(database: Database, *, now: datetime | None = None, days: int | None = None,
                          batch: int = BATCH) -> RetentionReport:
    """Delete what is older than the retention period at ``now`` (default: the clock and the setting)."""
    now = now or utcnow()
    keep = days if days is not None else database.settings.retention_days
    cutoff = now - timedelta(days=keep)
    events = _delete_batches(database, ContextEvent, ContextEvent.at < cutoff, batch)
    triggers = _delete_batches(database, TriggerRecord,
                               (TriggerRecord.at < cutoff) & TriggerRecord.processed_at.is_not(None), batch)
    fixes = _clear_stale_fixes(database, cutoff, batch)
    return RetentionReport(context_events=events, triggers=triggers, last_fixes=fixes)
