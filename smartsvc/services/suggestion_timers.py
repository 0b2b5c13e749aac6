"""What the beat job does with suggestions whose time has come.

- a suggestion that waited for the end of quiet hours (``deliver_after`` passed) is judged by the
  budget again and pushed, deferred again, or suppressed;
- one past its ``expires_at`` that is still ``new``, ``delivered`` or ``snoozed`` becomes ``expired``;
- a snoozed one whose ``snoozed_until`` passed is pushed again (a new push round; budget checked).

Each suggestion is handled in its own transaction under its user's lock, and
checked again there, so two beat runs at once (or a feedback meanwhile) do
one thing once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update

from ..db import Database
from ..models import Rule, Suggestion
from ..timeutil import utcnow
from . import attention
from .suggestions import NOT_PUSHED_ANY_MORE, apply_verdict, candidate_of, lock_user

EXPIRED = "expired"
DEFAULT_BATCH = 500


@dataclass(frozen=True)
class TimerReport:
    """How many suggestions one run expired, released (after quiet hours) and pushed again (after a snooze)."""

    expired: int
    released: int
    repushed: int


def expire_due(database: Database, now: datetime) -> int:
    """Mark live suggestions past their ``expires_at`` as ``expired``; returns how many."""
    with database.unit_of_work() as uow:
        assert uow.session is not None
        result = uow.session.execute(
            update(Suggestion)
            .where(Suggestion.status.in_(("new", "delivered", "snoozed")), Suggestion.expires_at <= now)
            .values(status="expired", status_reason=EXPIRED, deliver_after=None, snoozed_until=None,
                    delivery_status=NOT_PUSHED_ANY_MORE)
            .execution_options(synchronize_session=False)
        )
        uow.commit()
    return int(getattr(result, "rowcount", 0) or 0)


def _due_ids(database: Database, query) -> list[uuid.UUID]:
    with database.session() as session:
        return list(session.scalars(query))


def _judge_again(database: Database, suggestion_id: uuid.UUID, now: datetime, *, snoozed: bool) -> bool:
    """Judge one due suggestion again and store the verdict; False when it was no longer due."""
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        user_id = session.scalar(select(Suggestion.user_id).where(Suggestion.id == suggestion_id))
        user = lock_user(session, user_id) if user_id is not None else None
        suggestion = session.get(Suggestion, suggestion_id, populate_existing=True) if user else None
        if suggestion is None or user is None:
            return False
        if snoozed:
            due = suggestion.status == "snoozed" and suggestion.snoozed_until is not None \
                and suggestion.snoozed_until <= now
        else:
            due = suggestion.status == "new" and suggestion.deliver_after is not None \
                and suggestion.deliver_after <= now
        if not due:
            return False
        if suggestion.expires_at <= now:
            suggestion.status, suggestion.status_reason = "expired", EXPIRED
            suggestion.deliver_after = suggestion.snoozed_until = None
            if suggestion.delivery_status == "pending":
                suggestion.delivery_status = "none"
            uow.commit()
            return False
        rule = session.get(Rule, suggestion.rule_id) if suggestion.rule_id is not None else None
        # The rule as it is now (its cooldown may have changed); a deleted rule no longer holds pushes back.
        candidate = candidate_of(suggestion, cooldown_s=rule.cooldown_s if rule else 0,
                                 rule_name=rule.name if rule else None)
        verdict = attention.judge(session, user, candidate, now)
        if snoozed and verdict.action != attention.SUPPRESS:
            suggestion.push_round += 1  # the next push is a new round: each device gets it once more
        apply_verdict(uow, suggestion, verdict, now)
        uow.commit()
        return True


def run_timers(database: Database, *, now: datetime | None = None, batch: int = DEFAULT_BATCH) -> TimerReport:
    """Expire, release and re-push what is due at ``now`` (default: the clock), at most ``batch`` of each."""
    now = now or utcnow()
    expired = expire_due(database, now)
    deferred = _due_ids(database, select(Suggestion.id).where(
        Suggestion.status == "new", Suggestion.deliver_after <= now).order_by(Suggestion.deliver_after).limit(batch))
    released = sum(_judge_again(database, sid, now, snoozed=False) for sid in deferred)
    snoozed = _due_ids(database, select(Suggestion.id).where(
        Suggestion.status == "snoozed", Suggestion.snoozed_until <= now).order_by(Suggestion.snoozed_until)
        .limit(batch))
    repushed = sum(_judge_again(database, sid, now, snoozed=True) for sid in snoozed)
    return TimerReport(expired=expired, released=released, repushed=repushed)
