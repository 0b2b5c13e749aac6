"""Users' fixes against real geofences on SQLite and PostgreSQL: enter, jitter, exit, dwell, deleted fences,
the per-process index refresh, and the state row committed with the caller's transaction."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from geographiclib.geodesic import Geodesic
from sqlalchemy import select

from geodata.geofences import DWELLED, ENTERED, EXITED, Fix
from smartsvc.errors import NotFound
from smartsvc.models import UserGeofenceState
from tests.support.factories import api_key, bearer, make_user

BERLIN = (52.52, 13.405)
T0 = datetime(2026, 6, 1, 10, 0, tzinfo=timezone.utc)


def moved(lat: float, lon: float, bearing: float, metres: float) -> tuple[float, float]:
    out = Geodesic.WGS84.Direct(lat, lon, bearing, metres)
    return out["lat2"], out["lon2"]


class World:
    """An app with an operator, a user and helpers to send the user's fixes through the tracker."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.client = app.test_client()
        self.container = app.extensions["smartsvc"]
        self.tracker = self.container.geofence_tracker
        self.operator = bearer(api_key(app, "operator"))
        self.user_id = uuid.UUID(make_user(self.client, api_key(app, "app"), "walker").id)

    def fence(self, **fields: Any) -> str:
        body = {"name": "shop", "center": {"lat": BERLIN[0], "lon": BERLIN[1]}, "radius_m": 150, **fields}
        response = self.client.post("/v1/geofences", json=body, headers=self.operator)
        assert response.status_code == 201, response.get_json()
        return response.get_json()["id"]

    def fix(self, lat: float, lon: float, seconds: float, accuracy: float | None = 5.0, *,
            commit: bool = True) -> list[Any]:
        with self.container.database.unit_of_work() as uow:
            events = self.tracker.evaluate_fix(uow.session, self.user_id,
                                               Fix(lat, lon, T0 + timedelta(seconds=seconds), accuracy))
            if commit:
                uow.commit()
        return events

    def tick(self, seconds: float) -> list[Any]:
        with self.container.database.unit_of_work() as uow:
            events = self.tracker.tick(uow.session, self.user_id, T0 + timedelta(seconds=seconds))
            uow.commit()
        return events

    def inside(self) -> list[Any]:
        with self.container.database.session() as session:
            return self.tracker.inside_fences(session, self.user_id)

    def stored_state(self) -> dict[str, Any] | None:
        with self.container.database.session() as session:
            return session.scalar(select(UserGeofenceState.state).where(UserGeofenceState.user_id == self.user_id))


@pytest.fixture
def world(db_app) -> World:
    return World(db_app)


def kinds(events: list[Any]) -> list[tuple[str, str]]:
    return [(e.type, e.fence_id) for e in events]


def test_entering_jitter_at_the_border_and_leaving(world):
    fence = world.fence()

    assert kinds(world.fix(*BERLIN, 0)) == [(ENTERED, fence)]
    jitter = [world.fix(*moved(*BERLIN, 90, 150 + (10 if i % 2 else -10)), 10 + i) for i in range(20)]
    assert jitter == [[]] * 20  # ±10 m around the boundary is inside the 20 m hysteresis: no storm

    left = world.fix(*moved(*BERLIN, 90, 200), 60)
    assert kinds(left) == [(EXITED, fence)]
    assert left[0].reason == "left" and left[0].inside_since == T0
    assert world.inside() == []
    assert world.stored_state()["fences"] == {}


def test_dwelling_fires_once_when_time_passes_without_fixes(world):
    fence = world.fence(dwell_s=300, tag="dealer", metadata={"dealer_id": "B-17"})

    assert kinds(world.fix(*BERLIN, 0)) == [(ENTERED, fence)]
    assert world.tick(299) == []
    assert kinds(world.tick(301)) == [(DWELLED, fence)]
    assert world.tick(400) == [] and world.fix(*BERLIN, 500) == []

    [inside] = world.inside()
    assert (inside.fence_id, inside.since, inside.dwelled, inside.tag, inside.metadata) == (
        fence, T0, True, "dealer", {"dealer_id": "B-17"})
    with world.container.database.session() as session:
        assert world.tracker.due_at(session, world.user_id) is None


def test_a_deleted_fence_is_dropped_without_an_exit_event(world):
    fence = world.fence()
    world.fix(*BERLIN, 0)
    assert [i.fence_id for i in world.inside()] == [fence]

    assert world.client.delete(f"/v1/geofences/{fence}", headers=world.operator).status_code == 204

    assert world.inside() == []
    assert world.fix(*BERLIN, 10) == []
    assert world.stored_state()["fences"] == {}


def test_a_disabled_fence_fires_nothing_until_enabled_again(world):
    fence = world.fence()
    world.client.patch(f"/v1/geofences/{fence}", json={"enabled": False}, headers=world.operator)

    assert world.fix(*BERLIN, 0) == []

    world.client.patch(f"/v1/geofences/{fence}", json={"enabled": True}, headers=world.operator)
    assert kinds(world.fix(*BERLIN, 10)) == [(ENTERED, fence)]


def test_the_index_is_rebuilt_only_when_a_geofence_changed(world):
    first = world.fence()
    live = world.tracker.live_index
    with world.container.database.session() as session:
        built = live.current(session)
        assert live.current(session) is built  # nothing changed: no rebuild
    assert first in built.index

    second = world.fence(center={"lat": 48.85, "lon": 2.35})
    with world.container.database.session() as session:
        rebuilt = live.current(session)
    assert rebuilt.version > built.version and second in rebuilt.index

    assert kinds(world.fix(48.85, 2.35, 0)) == [(ENTERED, second)]


def test_while_one_caller_rebuilds_the_others_use_the_previous_index(world):
    world.fence()
    live = world.tracker.live_index
    with world.container.database.session() as session:
        old = live.current(session)
    world.fence(center={"lat": 48.85, "lon": 2.35})

    with live._lock:  # another caller is building the new version
        with world.container.database.session() as session:
            assert live.current(session) is old


def test_the_state_is_stored_only_when_the_callers_transaction_commits(world):
    fence = world.fence()

    assert kinds(world.fix(*BERLIN, 0, commit=False)) == [(ENTERED, fence)]
    assert world.stored_state() is None
    assert kinds(world.fix(*BERLIN, 0)) == [(ENTERED, fence)]
    assert world.stored_state()["fences"][fence]["inside_since"] == T0.isoformat()


def test_a_fix_older_than_the_last_one_changes_nothing(world):
    fence = world.fence()
    world.fix(*BERLIN, 100)

    assert world.fix(*moved(*BERLIN, 0, 1000), 50) == []
    assert [i.fence_id for i in world.inside()] == [fence]


def test_an_unknown_user_is_404(world):
    world.fence()
    with world.container.database.unit_of_work() as uow:
        with pytest.raises(NotFound):
            world.tracker.evaluate_fix(uow.session, uuid.uuid4(), Fix(*BERLIN, T0, 5.0))


def test_an_unreadable_state_starts_again(world):
    fence = world.fence()
    world.fix(*BERLIN, 0)
    with world.container.database.unit_of_work() as uow:
        uow.session.get(UserGeofenceState, world.user_id).state = {"v": 99}
        uow.commit()

    assert kinds(world.fix(*BERLIN, 10)) == [(ENTERED, fence)]


def test_two_transactions_with_the_same_fix_enter_once(world):
    """The state row is locked: the second transaction waits for the first and then sees its state."""
    fence = world.fence()
    world.fix(*moved(*BERLIN, 0, 1000), -60)  # the user's state row exists: the lock is on it, not on its insert
    evaluated, results, errors = threading.Event(), {}, []

    def first() -> None:
        try:
            with world.container.database.unit_of_work() as uow:
                results["first"] = world.tracker.evaluate_fix(uow.session, world.user_id, Fix(*BERLIN, T0, 5.0))
                evaluated.set()
                threading.Event().wait(0.5)  # hold the lock while the second one tries
                uow.commit()
        except Exception as exc:  # surfaced below
            errors.append(exc)
            evaluated.set()

    thread = threading.Thread(target=first)
    thread.start()
    evaluated.wait(10)
    with world.container.database.unit_of_work() as uow:
        results["second"] = world.tracker.evaluate_fix(uow.session, world.user_id, Fix(*BERLIN, T0, 5.0))
        uow.commit()
    thread.join(10)

    assert not errors
    assert kinds(results["first"]) == [(ENTERED, fence)] and results["second"] == []
