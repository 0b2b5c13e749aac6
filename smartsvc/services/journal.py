"""The interaction journal (TRUST.md "What the user can see"): every touchpoint, its channel and time.

Touchpoints are ``interactions`` rows — ``suggestion.created`` (placed in the
inbox), ``suggestion.pushed`` (a push reached a device), the feedback
(``suggestion.opened/accepted/dismissed/snoozed``), ``spot.searched``,
``help.requested/message/answered/closed`` — plus the sharing ledger, read
here as ``data.shared`` touchpoints rather than written twice. Channels:
``api`` (the user's app called the service), ``inbox`` (a suggestion was put
in the inbox), ``push`` (a push notification), ``webhook`` (data sent to a
partner), ``agent`` (a help agent).

Effort metrics are computed from the whole history of each subject on the
page: per suggestion the time to action (first opened/accepted/dismissed
after the first push, else after its creation), per help case the time to
the first answer and the messages until it was solved.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Sequence

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ..db import Database
from ..delivery import PushMessage
from ..ids import new_id
from ..models import Interaction, SharingLedgerEntry
from .pagination import Page

SEARCHED = "spot.searched"
PUSHED = "suggestion.pushed"
SHARED = "data.shared"
CHANNELS = ("api", "inbox", "push", "webhook", "agent")
ACTIONS = ("suggestion.opened", "suggestion.accepted", "suggestion.dismissed")
HELP_MESSAGES = ("help.requested", "help.message", "help.answered")
_SUGGESTION_KINDS = ("suggestion.created", PUSHED, *ACTIONS)
_HELP_KINDS = (*HELP_MESSAGES, "help.closed")


@dataclass(frozen=True)
class JournalItem:
    """One touchpoint as the user sees it (``metrics``: the effort of its subject, or None)."""

    id: uuid.UUID
    kind: str
    channel: str
    at: datetime
    subject_type: str | None
    subject_id: uuid.UUID | None
    data: dict[str, Any]
    metrics: dict[str, Any] | None = None


def push_row(message: PushMessage, *, provider: str, round_: int, try_number: int, at: datetime) -> dict[str, Any]:
    """The ``interactions`` row of a push that reached one device (one touchpoint per device that got it),
    for a bulk INSERT by the delivery batch."""
    return {"id": new_id(), "user_id": message.user_id, "kind": PUSHED, "channel": "push",
            "subject_type": "suggestion", "subject_id": message.suggestion_id, "at": at,
            "data": {"device_id": str(message.device_id), "platform": message.platform, "provider": provider,
                     "round": round_, "try_number": try_number}}


def kind_filter(kind: str) -> Any:
    """``kind`` exactly, or with no dot the whole family (``suggestion`` → ``suggestion.*``)."""
    if "." in kind:
        return Interaction.kind == kind
    return or_(Interaction.kind == kind, Interaction.kind.startswith(f"{kind}.", autoescape=True))


def _shared_wanted(kind: str | None) -> bool:
    return kind is None or kind in (SHARED, SHARED.split(".")[0])


def _interaction_item(row: Interaction) -> JournalItem:
    return JournalItem(id=row.id, kind=row.kind, channel=row.channel, at=row.at, subject_type=row.subject_type,
                       subject_id=row.subject_id, data=dict(row.data or {}))


def _ledger_item(entry: SharingLedgerEntry) -> JournalItem:
    return JournalItem(id=entry.id, kind=SHARED, channel=entry.channel, at=entry.at, subject_type="sharing",
                       subject_id=entry.id, data={"recipient": entry.recipient, "event_type": entry.event_type,
                                                   "fields": list(entry.fields or []),
                                                   "reference_id": entry.reference_id})


def list_journal(database: Database, user_id: uuid.UUID, *, kind: str | None, since: datetime | None, limit: int,
                 cursor: uuid.UUID | None) -> Page[JournalItem]:
    """The user's touchpoints, newest first, with effort metrics (keyset pagination on the time-ordered id).

    Interactions and ledger entries are merged on their ids (both UUIDv7), so one cursor pages both.
    """
    with database.session() as session:
        query = select(Interaction).where(Interaction.user_id == user_id)
        if kind is not None:
            query = query.where(kind_filter(kind))
        if since is not None:
            query = query.where(Interaction.at >= since)
        if cursor is not None:
            query = query.where(Interaction.id < cursor)
        items = [_interaction_item(row) for row in
                 session.scalars(query.order_by(Interaction.id.desc()).limit(limit + 1))]
        if _shared_wanted(kind):
            ledger = select(SharingLedgerEntry).where(SharingLedgerEntry.user_id == user_id)
            if since is not None:
                ledger = ledger.where(SharingLedgerEntry.at >= since)
            if cursor is not None:
                ledger = ledger.where(SharingLedgerEntry.id < cursor)
            items += [_ledger_item(entry) for entry in
                      session.scalars(ledger.order_by(SharingLedgerEntry.id.desc()).limit(limit + 1))]
        items.sort(key=lambda item: item.id, reverse=True)
        has_more = len(items) > limit
        items = items[:limit]
        metrics = effort_metrics(session, user_id, items)
    items = [JournalItem(**{**item.__dict__, "metrics": metrics.get((item.subject_type, item.subject_id))})
             for item in items]
    return Page(items=items, next_after=items[-1].id if has_more and items else None)


def effort_metrics(session: Session, user_id: uuid.UUID,
                   items: Iterable[JournalItem]) -> dict[tuple[str, uuid.UUID], dict[str, Any]]:
    """Effort per (subject type, id) of the suggestions and help cases among ``items``."""
    subjects: dict[str, set[uuid.UUID]] = {"suggestion": set(), "help_case": set()}
    for item in items:
        if item.subject_type in subjects and item.subject_id is not None:
            subjects[item.subject_type].add(item.subject_id)
    out: dict[tuple[str, uuid.UUID], dict[str, Any]] = {}
    for subject_type, kinds, compute in (("suggestion", _SUGGESTION_KINDS, suggestion_metrics),
                                         ("help_case", _HELP_KINDS, help_metrics)):
        ids = subjects[subject_type]
        if not ids:
            continue
        history: dict[uuid.UUID, list[tuple[str, datetime]]] = {subject_id: [] for subject_id in ids}
        rows = session.execute(
            select(Interaction.subject_id, Interaction.kind, Interaction.at)
            .where(Interaction.user_id == user_id, Interaction.subject_type == subject_type,
                   Interaction.subject_id.in_(ids), Interaction.kind.in_(kinds))
            .order_by(Interaction.at, Interaction.id))
        for subject_id, row_kind, at in rows:
            history[subject_id].append((row_kind, at))
        for subject_id, events in history.items():
            out[(subject_type, subject_id)] = compute(events)
    return out


def _seconds(start: datetime, end: datetime) -> float:
    return round((end - start).total_seconds(), 3)


def suggestion_metrics(events: Sequence[tuple[str, datetime]]) -> dict[str, Any]:
    """Time to action of one suggestion from its (kind, at) touchpoints, oldest first.

    Measured from the first push when the action came after it, else from its creation; an action is
    opened, accepted or dismissed (a snooze postpones, it does not act).
    """
    created = next((at for kind, at in events if kind == "suggestion.created"), None)
    pushed = next((at for kind, at in events if kind == PUSHED), None)
    start, since = (pushed, "pushed") if pushed is not None else (created, "created")
    action = None
    if start is not None:
        action = next(((kind, at) for kind, at in events if kind in ACTIONS and at >= start), None)
        if action is None and since == "pushed" and created is not None:
            # Acted on in the inbox before the push went out.
            start, since = created, "created"
            action = next(((kind, at) for kind, at in events if kind in ACTIONS and at >= start), None)
    return {
        "pushed_at": pushed,
        "action": action[0].split(".", 1)[1] if action else None,
        "action_at": action[1] if action else None,
        "time_to_action_s": _seconds(start, action[1]) if action and start is not None else None,
        "measured_from": since if action else None,
    }


def help_metrics(events: Sequence[tuple[str, datetime]]) -> dict[str, Any]:
    """Customer effort of one help case from its (kind, at) touchpoints, oldest first.

    Messages count the request, the user's messages and the agents' answers up to the first close.
    """
    requested = next((at for kind, at in events if kind == "help.requested"), None)
    answered = next((at for kind, at in events if kind == "help.answered"), None)
    closed = next((at for kind, at in events if kind == "help.closed"), None)
    messages = sum(1 for kind, at in events if kind in HELP_MESSAGES and (closed is None or at <= closed))
    return {
        "requested_at": requested,
        "first_answer_at": answered,
        "time_to_first_answer_s": _seconds(requested, answered) if requested and answered else None,
        "solved": closed is not None,
        "closed_at": closed,
        "messages": messages,
        "messages_until_solved": messages if closed is not None else None,
    }
