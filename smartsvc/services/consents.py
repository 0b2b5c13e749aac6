"""Consent per purpose, off until granted, with the history of every change."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from ..db import Database
from ..errors import Forbidden, InvalidInput
from ..models import CONSENT_PURPOSES, Consent, ConsentEvent
from ..timeutil import utcnow
from .bulk import Matching, chunks


@dataclass(frozen=True)
class ConsentState:
    """A purpose, whether it is granted now, and its change history."""

    purpose: str
    granted: bool
    changed_at: datetime | None
    history: list[ConsentEvent]


def set_consent(database: Database, user_id: uuid.UUID, purpose: str, granted: bool) -> ConsentState:
    """Grant or withdraw one purpose; every change is kept in the history."""
    if purpose not in CONSENT_PURPOSES:
        raise InvalidInput("purpose", f"must be one of {', '.join(CONSENT_PURPOSES)}")
    now = utcnow()
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        consent = session.get(Consent, (user_id, purpose))
        if consent is None:
            consent = Consent(user_id=user_id, purpose=purpose, granted=granted, changed_at=now)
            session.add(consent)
            changed = True
        else:
            changed = consent.granted != granted
            if changed:
                consent.granted = granted
                consent.changed_at = now
        if changed:
            session.add(ConsentEvent(user_id=user_id, purpose=purpose, granted=granted, at=now))
        if changed and not granted:
            from .consent_effects import apply_withdrawal  # it imports modules that import this one

            apply_withdrawal(uow, user_id, purpose, now)  # TRUST.md: queued work for the purpose is not delivered
        uow.commit()
    return next(state for state in list_consents(database, user_id) if state.purpose == purpose)


def list_consents(database: Database, user_id: uuid.UUID) -> list[ConsentState]:
    """Every purpose (ungranted ones included) with its history, oldest first."""
    with database.session() as session:
        current = {c.purpose: c for c in session.scalars(select(Consent).where(Consent.user_id == user_id))}
        events = list(
            session.scalars(
                select(ConsentEvent).where(ConsentEvent.user_id == user_id).order_by(ConsentEvent.id)
            )
        )
    states = []
    for purpose in CONSENT_PURPOSES:
        consent = current.get(purpose)
        states.append(
            ConsentState(
                purpose=purpose,
                granted=bool(consent and consent.granted),
                changed_at=consent.changed_at if consent else None,
                history=[e for e in events if e.purpose == purpose],
            )
        )
    return states


# Built once: building the query each time cost more CPU than running it (an event to partners asks once).
CONSENT_GRANTED = select(Consent.granted).where(Consent.user_id == bindparam("user_id"),
                                                Consent.purpose == bindparam("purpose"))


def has_consent(session: Session, user_id: uuid.UUID, purpose: str) -> bool:
    """True when ``purpose`` is granted for the user now."""
    return bool(session.scalar(CONSENT_GRANTED, {"user_id": user_id, "purpose": purpose}))


_GRANTED = Matching([Consent.user_id], Consent.user_id, Consent.purpose == bindparam("purpose"),
                    Consent.granted.is_(True))


def consenting_users(session: Session, user_ids: Iterable[uuid.UUID], purpose: str) -> set[uuid.UUID]:
    """The users among ``user_ids`` for whom ``purpose`` is granted now (one query for a batch)."""
    found: set[uuid.UUID] = set()
    for chunk in chunks(sorted(set(user_ids))):
        found.update(session.scalars(_GRANTED.statement(session), _GRANTED.parameters(chunk, purpose=purpose)))
    return found


def require_consent(session: Session, user_id: uuid.UUID, purpose: str) -> None:
    """403 naming the purpose unless it is granted; nothing is stored then."""
    if not has_consent(session, user_id, purpose):
        raise Forbidden(
            f"consent '{purpose}' is not granted; grant it with PUT /v1/me/consents/{purpose}",
            errors={"consent": [f"'{purpose}' not granted"]},
        )
