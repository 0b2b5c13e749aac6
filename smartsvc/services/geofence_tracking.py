"""Where users are relative to the geofences: enter / exit / dwell events from their fixes, and the fences they are in.

The rules (hysteresis, accuracy, schedules, dwell, deleted fences) are
:mod:`geodata.geofences.machine`'s; this module keeps each user's machine
state in ``user_geofence_states`` and runs the machine against the process's
current :class:`~smartsvc.services.geofence_index.LiveGeofenceIndex`.

The context engine calls :meth:`GeofenceTracker.evaluate_fix` inside its own
transaction (a write unit of work): the user's state row is locked
(``SELECT … FOR UPDATE`` on PostgreSQL; SQLite's write transaction excludes
other writers), so two fixes of one user processed at once cannot both start
from the same state, and the new state commits with whatever the caller
derives from the events, or not at all.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from geodata.geofences import Fix, GeofenceEvent, MachineConfig, due_at, inside, new_state, step, tick

from ..errors import NotFound
from ..models import User, UserGeofenceState
from ..timeutil import utcnow
from .geofence_index import LiveGeofenceIndex

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InsideFence:
    """A fence the user is inside: since when, whether the dwell event fired, and the facts rules read."""

    fence_id: str
    since: datetime
    dwelled: bool
    tag: str | None
    metadata: Mapping[str, Any]


class GeofenceTracker:
    """Runs users' fixes through the geofence state machine, with their state kept in the database."""

    def __init__(self, live_index: LiveGeofenceIndex | None = None, config: MachineConfig | None = None) -> None:
        self.live_index = live_index or LiveGeofenceIndex()
        self.config = config or MachineConfig()

    def evaluate_fix(self, session: Session, user_id: uuid.UUID, fix: Fix) -> list[GeofenceEvent]:
        """The events one location fix causes, with the user's new state stored (not committed).

        A fix not later than the last one processed for the user changes
        nothing and returns no events. 404 when the user does not exist.
        """
        index = self.live_index.current(session).index  # before the lock: a first build may take a while
        row = self._locked_state(session, user_id)
        state, events = step(index, self._readable(row), fix, self.config)
        self._store(row, state)
        return events

    def open(self, session: Session, user_id: uuid.UUID) -> "UserFences":
        """The user's state locked and read once, for a batch of fixes (store it with :meth:`UserFences.store`).

        One index read, one lock and one write per batch instead of per fix:
        a batch of 500 fixes otherwise re-reads the index version and the
        state row 500 times.
        """
        index = self.live_index.current(session).index
        row = self._locked_state(session, user_id)
        return UserFences(self, index, row, self._readable(row))

    def tick(self, session: Session, user_id: uuid.UUID, at: datetime) -> list[GeofenceEvent]:
        """Let time pass until ``at`` without a fix (dwell timers, schedules closing); state stored like a fix."""
        index = self.live_index.current(session).index
        row = self._locked_state(session, user_id)
        state, events = tick(index, self._readable(row), at, self.config)
        self._store(row, state)
        return events

    def due_at(self, session: Session, user_id: uuid.UUID) -> datetime | None:
        """When a :meth:`tick` would next produce an event for the user (None: nothing pending)."""
        row = session.get(UserGeofenceState, user_id)
        if row is None:
            return None
        return due_at(self.live_index.current(session).index, self._readable(row))

    def inside_fences(self, session: Session, user_id: uuid.UUID) -> list[InsideFence]:
        """The fences the user is inside now and since when, oldest stay first.

        Fences deleted or disabled since the user's last fix are left out
        (their state entry goes at the next fix).
        """
        row = session.get(UserGeofenceState, user_id)
        if row is None:
            return []
        state = self._readable(row)
        index = self.live_index.current(session).index
        found = []
        for fence_id, since in inside(state).items():
            fence = index.get(fence_id)
            if fence is None:
                continue
            found.append(InsideFence(fence_id, since, bool(state["fences"][fence_id].get("dwelled")), fence.tag,
                                     dict(fence.metadata)))
        return sorted(found, key=lambda item: (item.since, item.fence_id))

    def _locked_state(self, session: Session, user_id: uuid.UUID) -> UserGeofenceState:
        row = session.get(UserGeofenceState, user_id, with_for_update=True, populate_existing=True)
        if row is not None:
            return row
        if session.get(User, user_id) is None:
            raise NotFound(f"user {user_id} does not exist")
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        # A concurrent first fix of the same user may insert first; then its row is the one locked.
        session.execute(insert(UserGeofenceState).values(user_id=user_id, state=new_state(), updated_at=utcnow())
                        .on_conflict_do_nothing(index_elements=["user_id"]))
        row = session.get(UserGeofenceState, user_id, with_for_update=True, populate_existing=True)
        assert row is not None
        return row

    @staticmethod
    def _readable(row: UserGeofenceState) -> dict[str, Any]:
        state = row.state
        if isinstance(state, dict) and state.get("v") == new_state()["v"]:
            return state
        # A state this code cannot read (an older format, a hand edit) must not stop the user's
        # context: start again; the next fixes enter them into the fences they are in.
        log.warning("unreadable geofence state replaced", extra={"user_id": str(row.user_id)})
        return new_state()

    @staticmethod
    def _store(row: UserGeofenceState, state: dict[str, Any]) -> None:
        row.state = state
        row.updated_at = utcnow()


class UserFences:
    """One user's geofence state held in memory for a batch of fixes (the row stays locked by the transaction)."""

    def __init__(self, tracker: GeofenceTracker, index: Any, row: UserGeofenceState, state: dict[str, Any]) -> None:
        self._tracker = tracker
        self.index = index
        self._row = row
        self._state = state

    def evaluate_fix(self, fix: Fix) -> list[GeofenceEvent]:
        """The events one fix causes (a fix not later than the last one changes nothing)."""
        self._state, events = step(self.index, self._state, fix, self._tracker.config)
        return events

    def due_at(self) -> datetime | None:
        """When a tick would next produce an event for the user, from the state held."""
        return due_at(self.index, self._state)

    def store(self) -> None:
        """Write the state held onto the locked row (committed with the caller's transaction)."""
        self._tracker._store(self._row, self._state)
