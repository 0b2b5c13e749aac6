"""Storing a batch of context events: each (user, type, ``at``) once, late ones marked, in one statement.

The rows go to ``context_events`` with ``ON CONFLICT DO NOTHING`` on the
unique (user, type, at), so an event stored before (a batch sent again) is
neither stored nor returned; the caller applies only what was new.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from ..ids import new_id
from ..models import ContextEvent
from ..timeutil import utcnow

# Same ``at``: the trip first, so that a fix at the very moment a trip starts counts for the trip.
_TYPE_ORDER = {"app": 0, "activity": 1, "trip": 2, "location": 3}


@dataclass(frozen=True)
class PreparedEvent:
    """One validated event in its stored form: UTC time, rounded coordinates, no empty optional fields."""

    index: int  # position in the batch as sent (for field paths in errors)
    type: str
    at: datetime
    data: dict[str, Any]


def store_events(session: Session, user_id: uuid.UUID, events: list[PreparedEvent],
                 is_late: Any) -> list[tuple[uuid.UUID, PreparedEvent, bool]]:
    """Insert the events not stored yet; the new ones as (id, event, late), in ``at`` order."""
    ordered = sorted(events, key=lambda e: (e.at, _TYPE_ORDER[e.type], e.index))
    unique: dict[tuple[str, datetime], PreparedEvent] = {}
    for event in ordered:
        unique.setdefault((event.type, event.at), event)  # the same event twice in one batch: the first
    rows = []
    planned: dict[uuid.UUID, tuple[PreparedEvent, bool]] = {}
    received = utcnow()
    for event in unique.values():
        event_id, late = new_id(), bool(is_late(event.at))
        planned[event_id] = (event, late)
        rows.append({"id": event_id, "user_id": user_id, "type": event.type, "at": event.at, "data": event.data,
                     "received_at": received, "late": late})
    if not rows:
        return []
    if session.get_bind().dialect.name == "postgresql":
        inserted = _insert_events_postgresql(session, user_id, received, rows)
    else:
        inserted = _insert_events_sqlite(session, rows)
    return [(event_id, *planned[event_id]) for event_id in planned if event_id in inserted]


def _insert_events_sqlite(session: Session, rows: list[dict[str, Any]]) -> set[uuid.UUID]:
    """Insert the rows (a stored duplicate is skipped); the ids inserted."""
    # One Core statement executed with many parameter sets: SQLAlchemy compiles it once (cached) and sends
    # the rows as multi-row VALUES pages. A literal multi-row .values([...]) was compiled afresh for every
    # batch: ~60 % of a 100-event batch's database time (BENCHMARKS.md, section 4).
    table = ContextEvent.__table__
    statement = (sqlite_insert(table).on_conflict_do_nothing(index_elements=["user_id", "type", "at"])
                 .returning(table.c.id))
    return set(session.execute(statement, rows).scalars())


# The batch as one JSON parameter: a statement short enough for psycopg to cache its parsed form and for
# the server to prepare. The multi-row VALUES form had 700 placeholders for 100 events, which psycopg
# parses afresh on every execution (~4 ms CPU a batch; BENCHMARKS.md, section 4); one array per column
# cost nearly as much in psycopg's escaping of each text element.
_PG_INSERT_EVENTS = text(
    "INSERT INTO context_events (id, user_id, type, at, data, received_at, late) "
    "SELECT e.id, :user_id, e.type, e.at, e.data, :received_at, e.late "
    "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS e(id uuid, type varchar, at timestamptz, data jsonb, "
    "late boolean) "
    "ON CONFLICT (user_id, type, at) DO NOTHING RETURNING id")


def _insert_events_postgresql(session: Session, user_id: uuid.UUID, received: datetime,
                              rows: list[dict[str, Any]]) -> set[uuid.UUID]:
    """Insert the rows in one statement; the ids inserted (a stored duplicate is not)."""
    document = json.dumps([{"id": str(row["id"]), "type": row["type"], "at": row["at"].isoformat(),
                            "data": row["data"], "late": row["late"]} for row in rows])
    return set(session.scalars(_PG_INSERT_EVENTS, {"user_id": user_id, "received_at": received, "rows": document}))
