"""Suggestions (docs/engine.md section 4): propose one through the attention budget, list them, read one.

:func:`propose` runs in the engine's transaction and is idempotent on the
proposal's ``dedupe_key``. Whatever the budget decides, the suggestion is
stored — pushed now (an outbox message for :data:`PUSH_TASK`), waiting for
the end of quiet hours (``deliver_after``), or ``suppressed`` with the
reason — and a ``suggestion.created`` interaction records it. Feedback is in
:mod:`.suggestion_feedback`, the timers (release, expiry, snooze) in
:mod:`.suggestion_timers`.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Mapping, Sequence

from sqlalchemy import case, select, update
from sqlalchemy.orm import Session

from ..config import Settings
from ..db import Database, UnitOfWork
from ..errors import NotFound
from ..ids import new_id
from ..models import Device, Interaction, PushAttempt, Suggestion, User
from ..timeutil import utcnow
from . import attention, outbox
from .pagination import Page
from .proposals import Proposal
from .webhook_events import emit_event, suggestion_event

# The Celery task that pushes one suggestion to the user's devices (workers/tasks/delivery.py).
PUSH_TASK = "smartsvc.delivery.push"
MAX_TITLE_CHARS = 500
MAX_BODY_CHARS = 10_000
REPLACED = "replaced by a newer suggestion"
# Statuses a newer suggestion with the same collapse key replaces (the older one is still "live").
REPLACEABLE = ("new", "delivered", "snoozed")
# For a suggestion that will not be pushed any more: "pending" becomes "none", a settled status stays.
NOT_PUSHED_ANY_MORE = case((Suggestion.delivery_status == "pending", "none"), else_=Suggestion.delivery_status)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def as_json(value: Mapping[str, Any]) -> dict[str, Any]:
    """``value`` as plain JSON (datetimes and UUIDs as strings), as it will be stored and read back."""
    return json.loads(json.dumps(dict(value), default=_json_default))


def content_hash(kind: str, title: str, body: str, payload: Mapping[str, Any]) -> str:
    """SHA-256 of the content a user would see: the same hash means the same push."""
    canonical = json.dumps([kind, title, body, payload], sort_keys=True, ensure_ascii=False,
                           separators=(",", ":"), default=_json_default)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def record_interaction(session: Session, user_id: uuid.UUID, kind: str, *, subject_id: uuid.UUID | None,
                       data: Mapping[str, Any], at: datetime, subject_type: str = "suggestion",
                       channel: str | None = None) -> Interaction:
    """Add one interaction (the user's memory of what happened) in the caller's transaction.

    ``channel`` defaults to the kind's (:func:`smartsvc.models.suggestions.default_channel`)."""
    interaction = Interaction(user_id=user_id, kind=kind, subject_type=subject_type, subject_id=subject_id,
                              data=as_json(data), at=at, **({"channel": channel} if channel else {}))
    session.add(interaction)
    return interaction


@dataclass(frozen=True)
class BatchKnowledge:
    """What an engine batch already did in its transaction, so that :func:`propose` skips what it made redundant.

    ``locked_users``: the users whose rows the batch locked (NO KEY UPDATE) and loaded, outside any
    savepoint, so the lock holds until the end of the transaction. ``fresh_triggers``: the triggers that
    had no suggestion when the batch locked their users; each of their rules proposes once in the batch,
    so none of their dedupe keys can be stored yet (the unique key stays the backstop).
    """

    locked_users: frozenset[uuid.UUID] = frozenset()
    fresh_triggers: frozenset[uuid.UUID] = frozenset()


def lock_user(session: Session, user_id: uuid.UUID, *, locked: frozenset[uuid.UUID] = frozenset()) -> User | None:
    """The user's row, locked (PostgreSQL; SQLite writers hold the database lock): one budget decision at a time.

    NO KEY UPDATE excludes the other budget deciders and the push batches (``FOR UPDATE``), not the inserts
    that only reference the user; and it is the lock the engine already holds, so taking it again inside an
    engine batch never upgrades a lock out of the batch's user order (which could deadlock with a push batch).
    ``locked``: users this transaction locked and loaded already (an engine batch): no round trip.
    """
    if user_id in locked:
        user = session.get(User, user_id)
        if user is not None:
            return user
    return session.get(User, user_id, with_for_update={"key_share": True}, populate_existing=True)


def candidate_of(suggestion: Suggestion, *, cooldown_s: int, rule_name: str | None) -> attention.Candidate:
    """What the budget needs to judge a stored suggestion again (release, re-push)."""
    return attention.Candidate(
        user_id=suggestion.user_id, rule_id=suggestion.rule_id, rule_name=rule_name, cooldown_s=cooldown_s,
        content_hash=suggestion.content_hash, expires_at=suggestion.expires_at, suggestion_id=suggestion.id)


def apply_verdict(uow: UnitOfWork, suggestion: Suggestion, verdict: attention.Verdict, now: datetime) -> None:
    """Store what the budget decided; a push is enqueued, and a live suggestion replaces older ones."""
    session = uow.session
    assert session is not None
    suggestion.snoozed_until = None
    if verdict.action == attention.SUPPRESS:
        suggestion.status, suggestion.status_reason = "suppressed", verdict.reason
        suggestion.deliver_after = None
        if suggestion.delivery_status == "pending":  # a snoozed one keeps what became of its earlier push
            suggestion.delivery_status = "none"
        return
    suggestion.status, suggestion.status_reason = "new", verdict.reason
    suggestion.delivery_status = "pending"
    suggestion.deliver_after = verdict.deliver_after
    if verdict.action == attention.PUSH:
        suggestion.pushed_at = now
    session.flush()
    _replace_older(session, suggestion)
    if verdict.action == attention.PUSH:
        outbox.enqueue(uow, PUSH_TASK, {"suggestion_id": str(suggestion.id)},
                       ordering_key=f"user:{suggestion.user_id}", user_id=suggestion.user_id)


def _replace_older(session: Session, suggestion: Suggestion) -> None:
    session.execute(
        update(Suggestion)
        .where(Suggestion.user_id == suggestion.user_id, Suggestion.collapse_key == suggestion.collapse_key,
               Suggestion.id < suggestion.id, Suggestion.status.in_(REPLACEABLE))
        .values(status="expired", status_reason=REPLACED, deliver_after=None, snoozed_until=None,
                delivery_status=NOT_PUSHED_ANY_MORE)
        .execution_options(synchronize_session=False)
    )


def _settings_of(uow: UnitOfWork) -> Settings:
    # The unit of work knows its database (and so the settings) but does not expose it.
    return uow.database.settings


def propose(uow: UnitOfWork, proposal: Proposal, *, now: datetime | None = None,
            settings: Settings | None = None, batch: BatchKnowledge | None = None) -> Suggestion:
    """Store the suggestion ``proposal`` describes and let the attention budget decide its push.

    Idempotent on ``proposal.dedupe_key``: proposing again returns the
    stored suggestion and changes nothing. ``now`` (default: the clock) is
    the moment the budget is judged at. 404 when the user no longer exists.
    ``batch``: what the calling engine batch already did in this transaction.
    """
    session = uow.session
    assert session is not None
    now = now or utcnow()
    settings = settings or _settings_of(uow)
    batch = batch or BatchKnowledge()
    user = lock_user(session, proposal.user_id, locked=batch.locked_users)
    if user is None:
        raise NotFound(f"user {proposal.user_id} does not exist")
    if proposal.trigger_id not in batch.fresh_triggers:
        existing = session.scalar(select(Suggestion).where(Suggestion.dedupe_key == proposal.dedupe_key))
        if existing is not None:
            return existing
    content = proposal.content
    title, body = _clip(content.title, MAX_TITLE_CHARS), _clip(content.body, MAX_BODY_CHARS)
    payload = as_json(content.payload)
    expires_at = content.expires_at or now + timedelta(seconds=settings.suggestion_ttl_s)
    collapse_key = content.collapse_key or (str(proposal.rule_id) if proposal.rule_id else proposal.kind)
    suggestion = Suggestion(
        id=new_id(), user_id=user.id, rule_id=proposal.rule_id, trigger_id=proposal.trigger_id,
        kind=proposal.kind,
        title=title, body=body, payload=payload, reason=as_json(proposal.reason), collapse_key=collapse_key[:200],
        content_hash=content_hash(proposal.kind, title, body, payload), status="new", created_at=now,
        expires_at=expires_at, delivery_status="pending", dedupe_key=proposal.dedupe_key, push_round=0,
    )
    rule = proposal.reason.get("rule")
    rule_name = rule.get("name") if isinstance(rule, Mapping) else None
    if expires_at <= now:
        verdict = attention.Verdict(attention.SUPPRESS, "expired before it could be pushed")
    else:
        candidate = candidate_of(suggestion, cooldown_s=proposal.cooldown_s, rule_name=rule_name)
        verdict = attention.judge(session, user, candidate, now)
    # Added once judged, so that it is written once with its status (the budget's reads would flush it).
    session.add(suggestion)
    apply_verdict(uow, suggestion, verdict, now)
    record_interaction(session, user.id, "suggestion.created", subject_id=suggestion.id, at=now, data={
        "kind": suggestion.kind, "rule_id": suggestion.rule_id, "trigger_id": suggestion.trigger_id,
        "status": suggestion.status, "status_reason": suggestion.status_reason,
    })
    emit_event(uow, "suggestion.created", f"user:{user.id}", suggestion_event(suggestion), user_id=user.id, now=now)
    return suggestion


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class AttemptView:
    """One push attempt with the platform of its device."""

    attempt: PushAttempt
    platform: str


@dataclass(frozen=True)
class SuggestionView:
    """A suggestion with its push attempts (newest round first)."""

    suggestion: Suggestion
    attempts: Sequence[AttemptView]


def list_suggestions(database: Database, user_id: uuid.UUID, *, status: str | None, limit: int,
                     cursor: uuid.UUID | None) -> Page[Suggestion]:
    """The user's suggestions, newest first, optionally of one status (keyset pagination on the id)."""
    query = select(Suggestion).where(Suggestion.user_id == user_id)
    if status is not None:
        query = query.where(Suggestion.status == status)
    if cursor is not None:
        query = query.where(Suggestion.id < cursor)
    with database.session() as session:
        rows = list(session.scalars(query.order_by(Suggestion.id.desc()).limit(limit + 1)))
    has_more = len(rows) > limit
    rows = rows[:limit]
    return Page(items=rows, next_after=rows[-1].id if has_more and rows else None)


def load_view(session: Session, user_id: uuid.UUID, suggestion_id: uuid.UUID) -> SuggestionView:
    """One of the user's suggestions with its attempts; someone else's is 404."""
    suggestion = session.scalar(select(Suggestion).where(Suggestion.id == suggestion_id,
                                                         Suggestion.user_id == user_id))
    if suggestion is None:
        raise NotFound(f"suggestion {suggestion_id} does not exist")
    rows = session.execute(
        select(PushAttempt, Device.platform).join(Device, Device.id == PushAttempt.device_id)
        .where(PushAttempt.suggestion_id == suggestion_id)
        .order_by(PushAttempt.round.desc(), PushAttempt.started_at, PushAttempt.id)
    ).all()
    return SuggestionView(suggestion, [AttemptView(attempt, platform) for attempt, platform in rows])


def get_suggestion(database: Database, user_id: uuid.UUID, suggestion_id: uuid.UUID) -> SuggestionView:
    """One of the user's suggestions with its reason, delivery status and push attempts."""
    with database.session() as session:
        return load_view(session, user_id, suggestion_id)
