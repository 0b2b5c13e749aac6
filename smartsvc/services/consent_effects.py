"""What withdrawing a consent purpose cancels (TRUST.md "Consent per purpose": queued work is not delivered).

Runs in the transaction that records the withdrawal, under the user's row
lock (the engine, the budget and the delivery claim take the same lock), so
work of the purpose is either done before the withdrawal commits or never:

- ``proactive_push``: suggestions waiting to be pushed (new, not delivered —
  deferred to the end of quiet hours or pushed but not sent yet) become
  ``suppressed``; retries due later are dropped; unsent push messages are
  removed from the outbox. Snoozed ones stay in the inbox: when the snooze
  ends the budget finds no consent and suppresses them (never pushed).
- ``location``: the last fix, the speed and the active trip are cleared from
  the user's context, the geofence state (fences the user is inside, dwell
  timers) is deleted and the geofence timer stopped; geofence and trip
  triggers not yet run are deleted with their outbox messages, and pending
  partner deliveries of location events are cancelled. Location history
  already stored stays until retention or erasure removes it.
- ``telemetry``: readings not yet folded are marked processed without being
  folded (no trigger comes of them; their queued message then does nothing), and ``telemetry.updated`` triggers not
  yet run are deleted with their outbox messages.
- ``partner_sharing``: pending partner deliveries about the user are cancelled.

The consent history (``consent_events``) is kept.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Iterable

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from ..db import UnitOfWork
from ..models import (
    OutboxMessage, PushAttempt, Suggestion, TelemetryReading, TriggerRecord, UserContext, UserGeofenceState,
    WebhookDelivery,
)
from ..timeutil import utcnow
from . import attention
from .suggestions import PUSH_TASK, lock_user
from .triggers import HANDLE_TASK
from .webhook_events import TRIGGER_EVENTS, cancel_user_deliveries

LOCATION_TRIGGERS = ("geofence.entered", "geofence.exited", "geofence.dwelled",
                     "trip.started", "trip.approaching", "trip.arrived")
TELEMETRY_TRIGGERS = ("telemetry.updated",)
LOCATION_WITHDRAWN = "location consent withdrawn"
TELEMETRY_WITHDRAWN = "telemetry consent withdrawn"
RETRY_DROPPED = " (retry dropped: proactive_push consent withdrawn)"


def apply_withdrawal(uow: UnitOfWork, user_id: uuid.UUID, purpose: str, now: datetime | None = None) -> int:
    """Cancel the user's queued work for ``purpose`` in the caller's transaction; how many items were cancelled."""
    session = uow.session
    assert session is not None
    now = now or utcnow()
    if lock_user(session, user_id) is None:
        return 0
    if purpose == "partner_sharing":
        return cancel_user_deliveries(uow, user_id)
    if purpose == "proactive_push":
        return _cancel_pushes(session, user_id)
    if purpose == "location":
        return _forget_location(uow, user_id, now)
    if purpose == "telemetry":
        return _drop_telemetry(session, user_id, now)
    return 0


def _rowcount(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def _delete_unsent(session: Session, user_id: uuid.UUID, task: str, key: str, values: Iterable[str]) -> int:
    """Delete the user's outbox messages of ``task`` not published yet whose ``payload[key]`` is in ``values``.

    A message published already finds its work gone (or not allowed) when it runs.
    """
    wanted = set(values)
    if not wanted:
        return 0
    rows = session.execute(select(OutboxMessage.id, OutboxMessage.payload).where(
        OutboxMessage.user_id == user_id, OutboxMessage.task == task, OutboxMessage.sent_at.is_(None),
        OutboxMessage.completed_at.is_(None))).all()
    ids = [row_id for row_id, payload in rows if isinstance(payload, dict) and str(payload.get(key)) in wanted]
    if ids:
        session.execute(delete(OutboxMessage).where(OutboxMessage.id.in_(ids)))
    return len(ids)


def _drop_triggers(session: Session, user_id: uuid.UUID, events: tuple[str, ...]) -> int:
    """Delete the user's triggers of ``events`` the rules have not run on yet, and their unsent messages."""
    ids = list(session.scalars(select(TriggerRecord.id).where(
        TriggerRecord.user_id == user_id, TriggerRecord.event.in_(events), TriggerRecord.processed_at.is_(None))))
    if not ids:
        return 0
    session.execute(delete(TriggerRecord).where(TriggerRecord.id.in_(ids)).execution_options(
        synchronize_session=False))
    _delete_unsent(session, user_id, HANDLE_TASK, "trigger_id", (str(i) for i in ids))
    return len(ids)


def _cancel_pushes(session: Session, user_id: uuid.UUID) -> int:
    waiting = list(session.scalars(select(Suggestion).where(
        Suggestion.user_id == user_id, Suggestion.delivery_status == "pending",
        Suggestion.status.in_(("new", "delivered")))))
    suggestion_ids = [s.id for s in waiting]
    tried = set(session.scalars(select(PushAttempt.suggestion_id).where(
        PushAttempt.suggestion_id.in_(suggestion_ids)).distinct())) if suggestion_ids else set()
    for suggestion in waiting:
        if suggestion.status == "new":
            suggestion.status, suggestion.status_reason = "suppressed", attention.NO_CONSENT
        suggestion.deliver_after = None
        suggestion.delivery_status = "failed" if suggestion.id in tried else "none"
    # Retries due later, of any of the user's suggestions (one delivered to a phone may still retry another).
    retried = session.execute(
        update(PushAttempt)
        .where(PushAttempt.suggestion_id.in_(select(Suggestion.id).where(Suggestion.user_id == user_id)),
               PushAttempt.status == "failed", PushAttempt.retry_at.is_not(None))
        .values(retry_at=None, error=func.substr(func.coalesce(PushAttempt.error, "failed") + RETRY_DROPPED, 1, 2000))
        .execution_options(synchronize_session=False))
    all_ids = [str(i) for i in session.scalars(select(Suggestion.id).where(Suggestion.user_id == user_id))]
    _delete_unsent(session, user_id, PUSH_TASK, "suggestion_id", all_ids)
    return len(waiting) + _rowcount(retried)


def _forget_location(uow: UnitOfWork, user_id: uuid.UUID, now: datetime) -> int:
    session = uow.session
    assert session is not None
    cancelled = 0
    # The context row first, as a batch and the geofence timer do: neither interleaves with this.
    context = session.get(UserContext, user_id, with_for_update=True, populate_existing=True)
    if context is not None:
        cancelled += int(context.fix is not None or context.trip is not None or context.geofence_due_at is not None)
        context.fix = context.trip = None
        context.speed_mps = None
        context.geofence_due_at = None
        context.updated_at = now
    cancelled += _rowcount(session.execute(delete(UserGeofenceState).where(UserGeofenceState.user_id == user_id)))
    cancelled += _drop_triggers(session, user_id, LOCATION_TRIGGERS)
    cancelled += _rowcount(session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.user_id == user_id, WebhookDelivery.status == "pending",
               WebhookDelivery.event_type.in_(TRIGGER_EVENTS))
        .values(status="cancelled", status_reason=LOCATION_WITHDRAWN, next_attempt_at=None, updated_at=now)
        .execution_options(synchronize_session=False)))
    return cancelled


def _drop_telemetry(session: Session, user_id: uuid.UUID, now: datetime) -> int:
    readings = [str(i) for i in session.scalars(select(TelemetryReading.id).where(
        TelemetryReading.user_id == user_id, TelemetryReading.processed_at.is_(None)))]
    if readings:
        # Their messages stay: the worker finds them processed and only completes the message.
        session.execute(update(TelemetryReading).where(
            TelemetryReading.user_id == user_id, TelemetryReading.processed_at.is_(None))
            .values(processed_at=now).execution_options(synchronize_session=False))
    return len(readings) + _drop_triggers(session, user_id, TELEMETRY_TRIGGERS)
