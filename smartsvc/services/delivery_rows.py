"""The reads and writes of a push batch (:mod:`.delivery_batch`): a few statements for hundreds of suggestions
(``IN`` lists through :mod:`.bulk`)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session, defer

from ..models import Device, PushAttempt, Suggestion, User
from .bulk import among, chunks

def lock_users(session: Session, user_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
    """Lock the users' rows in id order (PostgreSQL; SQLite writers hold the database lock); those that exist."""
    found: set[uuid.UUID] = set()
    for chunk in chunks(sorted(set(user_ids))):
        found.update(session.scalars(select(User.id).where(among(session, User.id, chunk))
                                     .order_by(User.id).with_for_update()))
    return found


def load_locked(session: Session, suggestion_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Suggestion]:
    """The suggestions (fresh: read after the users' locks), locked first by their users."""
    user_ids = set()
    for chunk in chunks(suggestion_ids):
        user_ids.update(session.scalars(select(Suggestion.user_id).where(among(session, Suggestion.id, chunk))))
    lock_users(session, user_ids)
    out: dict[uuid.UUID, Suggestion] = {}
    for chunk in chunks(suggestion_ids):
        out.update((s.id, s) for s in session.scalars(
            select(Suggestion).where(among(session, Suggestion.id, chunk))
            .options(defer(Suggestion.payload), defer(Suggestion.reason))  # not needed to push
            .execution_options(populate_existing=True)))
    return out


def round_tries(session: Session, suggestions: Iterable[Suggestion]) -> dict[uuid.UUID, list[PushAttempt]]:
    """Each suggestion's tries in its current round."""
    by_id = {s.id: s for s in suggestions}
    out: dict[uuid.UUID, list[PushAttempt]] = {sid: [] for sid in by_id}
    for chunk in chunks(list(by_id)):
        for attempt in session.scalars(select(PushAttempt).where(among(session, PushAttempt.suggestion_id, chunk))
                                       .execution_options(populate_existing=True)):
            if attempt.round == by_id[attempt.suggestion_id].push_round:
                out[attempt.suggestion_id].append(attempt)
    return out


def active_devices(session: Session, user_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, list[Device]]:
    """Each user's active devices, in id order."""
    out: dict[uuid.UUID, list[Device]] = defaultdict(list)
    for chunk in chunks(sorted(set(user_ids))):
        query = select(Device).where(among(session, Device.user_id, chunk), Device.active.is_(True))
        for device in session.scalars(query.order_by(Device.id)):
            out[device.user_id].append(device)
    return out
