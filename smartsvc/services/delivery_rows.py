"""The reads and writes of a push batch (:mod:`.delivery_batch`): a few statements for hundreds of suggestions
(``IN`` lists through :mod:`.bulk`).

Rows are read with Core into :class:`Fields` — the columns the batch needs as plain attributes — not as ORM
objects: building, tracking and flushing 200 suggestions and their tries through the unit of work was a third
of the batch's CPU (BENCHMARKS.md, 6). What the batch changes on them is written back by
:func:`write_changes`, one statement per table on PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any, Iterable, Sequence

from sqlalchemy import Select, Table, select
from sqlalchemy.orm import Session

from ..models import Device, PushAttempt, Suggestion, User
from .bulk import Matching, among, chunks, update_rows

# What a push batch reads of each row (what delivery_batch and delivery's helpers look at).
SUGGESTION_COLUMNS = tuple(Suggestion.__table__.c[name] for name in (
    "id", "user_id", "status", "status_reason", "delivery_status", "delivered_at", "pushed_at", "deliver_after",
    "expires_at", "push_round", "kind", "title", "body", "collapse_key"))
ATTEMPT_COLUMNS = tuple(PushAttempt.__table__.c[name] for name in (
    "id", "suggestion_id", "device_id", "round", "try_number", "provider", "status", "started_at", "finished_at",
    "retry_at"))
DEVICE_COLUMNS = tuple(Device.__table__.c[name] for name in (
    "id", "user_id", "platform", "token", "subscription", "created_at", "last_seen_at", "active"))
_TRIES = Matching(ATTEMPT_COLUMNS, PushAttempt.__table__.c.suggestion_id)
_ACTIVE_DEVICES = Matching(DEVICE_COLUMNS, Device.__table__.c.user_id, Device.__table__.c.active.is_(True))


class Fields:
    """Some columns of one row as attributes. Setting one remembers it, for :func:`write_changes`."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)
        self.__dict__["changed"] = set()

    def __setattr__(self, name: str, value: Any) -> None:
        self.__dict__[name] = value
        self.changed.add(name)


def _read(session: Session, query: Select[Any], parameters: dict[str, Any] | None = None) -> list[Fields]:
    names = [column.name for column in query.selected_columns]
    # On the session's connection: Core, without the ORM's result machinery (no entity is loaded).
    return [Fields(dict(zip(names, row))) for row in session.connection().execute(query, parameters)]


def write_changes(session: Session, table: Table, rows: Iterable[Fields]) -> None:
    """UPDATE what was set on ``rows`` (by ``id``): one statement per set of changed columns; then forget it."""
    groups: dict[frozenset[str], list[Fields]] = defaultdict(list)
    for row in rows:
        if row.changed:
            groups[frozenset(row.changed)].append(row)
    for names, group in groups.items():
        ordered = sorted(names)
        update_rows(session, table, "id", [{"id": row.id, **{name: getattr(row, name) for name in ordered}}
                                           for row in group])
        for row in group:
            row.changed.clear()


def lock_users(session: Session, user_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
    """Lock the users' rows in id order (PostgreSQL; SQLite writers hold the database lock); those that exist."""
    found: set[uuid.UUID] = set()
    for chunk in chunks(sorted(set(user_ids))):
        found.update(session.scalars(select(User.id).where(among(session, User.id, chunk))
                                     .order_by(User.id).with_for_update()))
    return found


def load_locked(session: Session, suggestion_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Fields]:
    """The suggestions (fresh: read after the users' locks), locked first by their users."""
    user_ids = set()
    for chunk in chunks(suggestion_ids):
        user_ids.update(session.scalars(select(Suggestion.user_id).where(among(session, Suggestion.id, chunk))))
    lock_users(session, user_ids)
    out: dict[uuid.UUID, Fields] = {}
    for chunk in chunks(suggestion_ids):
        out.update((s.id, s) for s in _read(session, select(*SUGGESTION_COLUMNS).where(
            among(session, Suggestion.id, chunk))))
    return out


def round_tries(session: Session, suggestions: Iterable[Fields]) -> dict[uuid.UUID, list[Fields]]:
    """Each suggestion's tries in its current round."""
    by_id = {s.id: s for s in suggestions}
    out: dict[uuid.UUID, list[Fields]] = {sid: [] for sid in by_id}
    for chunk in chunks(list(by_id)):
        for attempt in _read(session, _TRIES.statement(session), _TRIES.parameters(chunk)):
            if attempt.round == by_id[attempt.suggestion_id].push_round:
                out[attempt.suggestion_id].append(attempt)
    return out


def active_devices(session: Session, user_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, list[Fields]]:
    """Each user's active devices, in id order."""
    out: dict[uuid.UUID, list[Fields]] = defaultdict(list)
    for chunk in chunks(sorted(set(user_ids))):
        for device in _read(session, _ACTIVE_DEVICES.statement(session), _ACTIVE_DEVICES.parameters(chunk)):
            out[device.user_id].append(device)
    for devices in out.values():
        devices.sort(key=lambda device: device.id)
    return out
