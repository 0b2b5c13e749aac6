"""Help on demand ("Mayday", TRUST.md): open a case with a context snapshot, talk, answer, close.

Each use case is one transaction. Opening writes the case, its snapshot
(:mod:`.help_snapshot`), the first message, a ``help.requested``
interaction and webhook. An agent reading a case is data leaving to that
agent: the first time each agent key sees a case (read, answer or close)
writes the user's sharing ledger. An agent's answer reaches the user as a
push (:mod:`.help_push`) and a ``help.updated`` webhook. Effort metrics
(time to first answer, messages until solved) are kept on the case.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping, Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..db import Database
from ..errors import Conflict, InvalidInput, NotFound
from ..models import HelpCase, HelpMessage, OwnedProduct, SharingLedgerEntry
from ..timeutil import utcnow
from .consents import has_consent
from .help_push import push_answer
from .help_snapshot import shown_snapshot, take_snapshot
from .pagination import Page, keyset_page
from .sharing import owner_name, record_sharing
from .suggestions import lock_user, record_interaction
from .webhook_events import emit_event, field_paths

MAX_OPEN_CASES = 5
MAX_MESSAGES_PER_CASE = 200
MAX_TEXT_CHARS = 4000
OPEN_STATUSES = ("open", "answered")
SUBJECT = "help_case"
AGENT_CHANNEL = "agent"
AGENT_READ_EVENT = "help.case_read"


@dataclass(frozen=True)
class CaseView:
    """A case with its conversation, and its snapshot as it may be shown now."""

    case: HelpCase
    messages: Sequence[HelpMessage]
    snapshot: Mapping[str, Any]


# --------------------------------------------------------------------------- bodies


def metrics(case: HelpCase) -> dict[str, Any]:
    """Customer effort: seconds until the first answer, and messages until solved (closed)."""
    first = case.first_answered_at
    return {
        "time_to_first_answer_s": round((first - case.created_at).total_seconds(), 3) if first else None,
        "first_answered_at": first,
        "messages_until_solved": case.messages_until_solved,
        "messages": case.message_count,
    }


def message_body(message: HelpMessage) -> dict[str, Any]:
    """One turn of the conversation."""
    return {"id": message.id, "author": message.author, "text": message.text, "guidance": message.guidance,
            "created_at": message.created_at}


def summary_body(case: HelpCase) -> dict[str, Any]:
    """A case without its snapshot and conversation (the user's list)."""
    return {"id": case.id, "status": case.status, "topic": case.topic, "screen": case.screen,
            "product_id": case.product_id, "created_at": case.created_at, "updated_at": case.updated_at,
            "closed_at": case.closed_at, "metrics": metrics(case)}


def queue_body(case: HelpCase) -> dict[str, Any]:
    """A case in the agents' queue: nothing of the user until an agent opens it (and the ledger says so)."""
    return {"id": case.id, "status": case.status, "created_at": case.created_at, "updated_at": case.updated_at,
            "waiting_since": case.user_active_at, "closed_at": case.closed_at, "metrics": metrics(case)}


def case_body(view: CaseView, *, for_agent: bool = False) -> dict[str, Any]:
    """A case with its snapshot and conversation (the agent's view adds the user's id)."""
    body = {**summary_body(view.case), "snapshot": dict(view.snapshot),
            "messages": [message_body(m) for m in view.messages]}
    if for_agent:
        body["user_id"] = view.case.user_id
    return body


def event_data(case: HelpCase, change: str, *, snapshot: Mapping[str, Any] | None = None,
               message: HelpMessage | None = None) -> dict[str, Any]:
    """The data of ``help.requested`` / ``help.updated``: the case, what changed, the snapshot when opened."""
    data: dict[str, Any] = {**summary_body(case), "user_id": case.user_id, "change": change}
    if snapshot is not None:
        data["snapshot"] = dict(snapshot)
    if message is not None:
        data["message"] = message_body(message)
    return data


# --------------------------------------------------------------------------- reading


def _messages(session: Session, case_id: uuid.UUID) -> list[HelpMessage]:
    return list(session.scalars(select(HelpMessage).where(HelpMessage.case_id == case_id)
                                .order_by(HelpMessage.id)))


def _view(session: Session, case: HelpCase) -> CaseView:
    snapshot = shown_snapshot(case.snapshot, location_granted=has_consent(session, case.user_id, "location"))
    return CaseView(case, _messages(session, case.id), snapshot)


def _case(session: Session, case_id: uuid.UUID, user_id: uuid.UUID | None = None, *,
          lock: bool = False) -> HelpCase:
    query = select(HelpCase).where(HelpCase.id == case_id)
    if user_id is not None:
        query = query.where(HelpCase.user_id == user_id)
    if lock:
        query = query.with_for_update()
    case = session.scalar(query.execution_options(populate_existing=True))
    if case is None:
        raise NotFound(f"help case {case_id} does not exist")
    return case


def list_user_cases(database: Database, user_id: uuid.UUID, *, limit: int,
                    cursor: uuid.UUID | None) -> Page[HelpCase]:
    """The user's cases, newest first (keyset pagination on the id)."""
    with database.session() as session:
        return keyset_page(session, select(HelpCase).where(HelpCase.user_id == user_id), HelpCase.id,
                           limit=limit, after=cursor, newest_first=True)


def get_user_case(database: Database, user_id: uuid.UUID, case_id: uuid.UUID) -> CaseView:
    """One of the user's cases with its snapshot and conversation; someone else's is 404."""
    with database.session() as session:
        return _view(session, _case(session, case_id, user_id))


def list_queue(database: Database, *, status: str | None, limit: int, cursor: uuid.UUID | None) -> Page[HelpCase]:
    """Cases for agents, oldest first, optionally of one status."""
    query = select(HelpCase)
    if status is not None:
        query = query.where(HelpCase.status == status)
    with database.session() as session:
        return keyset_page(session, query, HelpCase.id, limit=limit, after=cursor)


# --------------------------------------------------------------------------- the user's side


def _add_message(session: Session, case: HelpCase, author: str, text: str, now: datetime, *,
                 agent_key_id: uuid.UUID | None = None, guidance: Mapping[str, Any] | None = None) -> HelpMessage:
    text = text.strip()
    if not text:
        raise InvalidInput("text" if author == "agent" else "message", "must not be blank")
    if case.message_count >= MAX_MESSAGES_PER_CASE:
        raise Conflict(f"help case {case.id} has {MAX_MESSAGES_PER_CASE} messages, the most one case can hold; "
                       "open a new case")
    message = HelpMessage(case_id=case.id, user_id=case.user_id, author=author, agent_key_id=agent_key_id,
                          text=text[:MAX_TEXT_CHARS], guidance=dict(guidance) if guidance else None, created_at=now)
    session.add(message)
    case.message_count += 1
    case.updated_at = now
    return message


def _reopen(case: HelpCase) -> None:
    case.closed_at = None
    case.messages_until_solved = None


def open_case(database: Database, user_id: uuid.UUID, *, topic: str | None = None, message: str | None = None,
              screen: str | None = None, product_id: uuid.UUID | None = None,
              now: datetime | None = None) -> CaseView:
    """Open a help case with the user's context as it is now; 409 past :data:`MAX_OPEN_CASES` open ones."""
    now = now or utcnow()
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        user = lock_user(session, user_id)  # one open-case count at a time
        if user is None:
            raise NotFound(f"user {user_id} does not exist")
        if product_id is not None and session.scalar(select(OwnedProduct.id).where(
                OwnedProduct.id == product_id, OwnedProduct.user_id == user_id)) is None:
            raise InvalidInput("product_id", f"product {product_id} is not one of your products (GET /v1/me/products)")
        open_count = session.scalar(select(func.count()).select_from(HelpCase).where(
            HelpCase.user_id == user_id, HelpCase.status.in_(OPEN_STATUSES))) or 0
        if open_count >= MAX_OPEN_CASES:
            raise Conflict(f"you have {open_count} open help cases, the most at once is {MAX_OPEN_CASES}; "
                           "add a message to one of them (GET /v1/me/help)")
        snapshot = take_snapshot(session, user, screen=screen, product_id=product_id, now=now)
        focus = snapshot["product_id"]
        case = HelpCase(user_id=user_id, status="open", topic=topic, screen=(snapshot["screen"] or {}).get("name"),
                        product_id=uuid.UUID(focus) if focus else None, snapshot=snapshot, message_count=0,
                        created_at=now, updated_at=now, user_active_at=now)
        session.add(case)
        session.flush()
        first = _add_message(session, case, "user", message, now) if message is not None else None
        record_interaction(session, user_id, "help.requested", subject_id=case.id, subject_type=SUBJECT, at=now,
                           data={"topic": topic, "screen": case.screen, "product_id": case.product_id})
        session.flush()
        emit_event(uow, "help.requested", f"user:{user_id}", event_data(case, "requested", snapshot=snapshot,
                                                                        message=first), user_id=user_id, now=now)
        view = _view(session, case)  # before the commit: the unit of work's closing rollback expires
        uow.commit()
        return view


def add_user_message(database: Database, user_id: uuid.UUID, case_id: uuid.UUID, text: str, *,
                     now: datetime | None = None) -> CaseView:
    """The user writes to their case (a closed one opens again: the problem is not solved after all)."""
    now = now or utcnow()
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        case = _case(session, case_id, user_id, lock=True)
        message = _add_message(session, case, "user", text, now)
        if case.status == "closed":
            _reopen(case)
        case.status, case.user_active_at = "open", now
        session.flush()
        record_interaction(session, user_id, "help.message", subject_id=case.id, subject_type=SUBJECT, at=now,
                           data={"message_id": message.id, "author": "user"})
        emit_event(uow, "help.updated", f"user:{user_id}", event_data(case, "message", message=message),
                   user_id=user_id, now=now)
        view = _view(session, case)  # before the commit: the unit of work's closing rollback expires
        uow.commit()
        return view


# --------------------------------------------------------------------------- the agent's side


def _shared_with_agent(session: Session, view: CaseView, key_id: uuid.UUID, now: datetime) -> None:
    """The sharing ledger entry of this agent seeing this case, the first time only."""
    case = view.case
    seen = session.scalar(select(SharingLedgerEntry.id).where(
        SharingLedgerEntry.user_id == case.user_id, SharingLedgerEntry.channel == AGENT_CHANNEL,
        SharingLedgerEntry.reference_id == str(case.id), SharingLedgerEntry.recipient_id == str(key_id)).limit(1))
    if seen is not None:
        return
    owner = f"key:{key_id}"
    record_sharing(session, user_id=case.user_id, channel=AGENT_CHANNEL,
                   recipient=f"support agent {owner_name(session, owner)}", event_type=AGENT_READ_EVENT,
                   fields=field_paths(case_body(view, for_agent=True)), at=now, recipient_id=str(key_id),
                   recipient_owner=owner, reference_id=str(case.id))


def agent_read(database: Database, key_id: uuid.UUID, case_id: uuid.UUID, *,
               now: datetime | None = None) -> CaseView:
    """An agent opens a case: everything it carries, and the ledger entry the first time."""
    now = now or utcnow()
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        view = _view(session, _case(session, case_id))
        _shared_with_agent(session, view, key_id, now)
        uow.commit()
        return view


def agent_answer(database: Database, key_id: uuid.UUID, case_id: uuid.UUID, text: str, *,
                 guidance: Mapping[str, Any] | None = None, now: datetime | None = None) -> CaseView:
    """An agent answers (a closed case opens again as answered); the user gets a push and partners ``help.updated``."""
    now = now or utcnow()
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        case = _case(session, case_id, lock=True)
        user = lock_user(session, case.user_id)
        assert user is not None  # the case cascades away with its user
        message = _add_message(session, case, "agent", text, now, agent_key_id=key_id, guidance=guidance)
        if case.status == "closed":
            _reopen(case)
        case.status = "answered"
        first = case.first_answered_at is None
        if first:
            case.first_answered_at = now
        session.flush()
        suggestion = push_answer(uow, user, case, message, now)
        data: dict[str, Any] = {"message_id": message.id, "author": "agent", "suggestion_id": suggestion.id,
                                "guidance": message.guidance}
        if first:
            data["time_to_first_answer_s"] = metrics(case)["time_to_first_answer_s"]
        record_interaction(session, case.user_id, "help.answered", subject_id=case.id, subject_type=SUBJECT,
                           at=now, data=data)
        emit_event(uow, "help.updated", f"user:{case.user_id}", event_data(case, "answered", message=message),
                   user_id=case.user_id, now=now)
        view = _view(session, case)
        _shared_with_agent(session, view, key_id, now)
        uow.commit()
        return view


def agent_close(database: Database, key_id: uuid.UUID, case_id: uuid.UUID, *,
                now: datetime | None = None) -> CaseView:
    """Close a case as solved (closing a closed case changes nothing); the messages until solved are kept."""
    now = now or utcnow()
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        case = _case(session, case_id, lock=True)
        if case.status != "closed":
            case.status, case.closed_at, case.updated_at = "closed", now, now
            case.messages_until_solved = case.message_count
            session.flush()
            record_interaction(session, case.user_id, "help.closed", subject_id=case.id, subject_type=SUBJECT,
                               at=now, data={"messages_until_solved": case.messages_until_solved,
                                             "time_to_first_answer_s": metrics(case)["time_to_first_answer_s"]})
            emit_event(uow, "help.updated", f"user:{case.user_id}", event_data(case, "closed"),
                       user_id=case.user_id, now=now)
        view = _view(session, case)
        _shared_with_agent(session, view, key_id, now)
        uow.commit()
        return view


# --------------------------------------------------------------------------- export


def export_cases(session: Session, user_id: uuid.UUID) -> list[dict[str, Any]]:
    """Every case of the user with its snapshot and conversation, oldest first (for ``GET /v1/me/export``)."""
    cases = session.scalars(select(HelpCase).where(HelpCase.user_id == user_id).order_by(HelpCase.id))
    return [case_body(_view(session, case)) for case in cases]
