"""POST / GET /v1/me/context through the HTTP API: ordering, duplicates, late events, consent, validation,
geofence events, trips (started → approaching per rule → arrived), the snapshot and its isolation per user."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from geographiclib.geodesic import Geodesic
from sqlalchemy import select

from smartsvc.models import ContextEvent, TriggerRecord, UserContext
from smartsvc.services.context_facts import context_facts
from smartsvc.services.telemetry import process_reading
from tests.support.checks import count, problem
from tests.support import factories
from tests.support.factories import api_key, bearer, grant, make_user
from tests.support.rules import example_rule
from workers.tasks.geofence_timer import run_geofence_timer

BERLIN = (52.52, 13.405)
# An hour ago, whole seconds: every event time is in the past, so none is "in the future".
T0 = (datetime.now(timezone.utc) - timedelta(hours=1)).replace(microsecond=0)


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def moved(metres: float, bearing: float = 0.0, origin: tuple[float, float] = BERLIN) -> tuple[float, float]:
    out = Geodesic.WGS84.Direct(origin[0], origin[1], bearing, metres)
    return out["lat2"], out["lon2"]


def location(seconds: float, point: tuple[float, float] = BERLIN, accuracy: float = 5.0, **extra: Any) -> dict:
    return {"type": "location", "at": at(seconds), "lat": point[0], "lon": point[1], "accuracy_m": accuracy, **extra}


def send(client: Any, user: factories.TestUser, *events: dict) -> Any:
    return client.post("/v1/me/context", json={"events": list(events)}, headers=user.headers)


def accepted(client: Any, user: factories.TestUser, *events: dict) -> dict:
    response = send(client, user, *events)
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def snapshot(client: Any, user: factories.TestUser) -> dict:
    response = client.get("/v1/me/context", headers=user.headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def triggers(app: Any, user: factories.TestUser | None = None, event: str | None = None) -> list[TriggerRecord]:
    with app.extensions["smartsvc"].database.session() as session:
        query = select(TriggerRecord).order_by(TriggerRecord.at, TriggerRecord.event)
        if user is not None:
            query = query.where(TriggerRecord.user_id == uuid.UUID(user.id))
        if event is not None:
            query = query.where(TriggerRecord.event == event)
        return list(session.scalars(query))


def fence(client: Any, operator: str, point: tuple[float, float] = BERLIN, **fields: Any) -> str:
    body = {"name": "dealer", "center": {"lat": point[0], "lon": point[1]}, "radius_m": 150, "tag": "dealer",
            "metadata": {"dealer_id": "B-17"}, **fields}
    response = client.post("/v1/geofences", json=body, headers=bearer(operator))
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def own_product(client: Any, operator: str, user: factories.TestUser, length_m: float = 2.69) -> str:
    model = client.post("/v1/catalog/models", headers=bearer(operator), json={
        "kind": "car", "brand": "smart", "name": f"fortwo {uuid.uuid4().hex[:6]}",
        "attributes": {"length_m": length_m}}).get_json()["id"]
    response = client.post("/v1/me/products", json={"model_id": model}, headers=user.headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def approaching_rule(client: Any, operator: str, **trigger: Any) -> str:
    body = example_rule(name=f"approach {trigger}", trigger={"event": "trip.approaching", **trigger})
    response = client.post("/v1/rules", json=body, headers=bearer(operator))
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


@pytest.fixture
def located(client, user) -> factories.TestUser:
    grant(client, user, "location")
    return user


# --------------------------------------------------------------------------- ordering, duplicates, late events


def journey(destination: tuple[float, float], fence_point: tuple[float, float]) -> list[dict]:
    """A user walks into a fence, leaves it, starts a trip and drives towards its destination."""
    return [
        {"type": "app", "at": at(0), "screen": "map"},
        {"type": "activity", "at": at(1), "value": "walking"},
        location(2, moved(1000, 180, fence_point)),
        location(30, fence_point),
        location(60, moved(600, 180, fence_point)),
        {"type": "trip", "at": at(70), "destination": {"lat": destination[0], "lon": destination[1]}},
        {"type": "activity", "at": at(71), "value": "driving"},
        location(80, moved(3000, 180, destination), speed_mps=12.0),
        location(90, moved(2880, 180, destination)),
        {"type": "app", "at": at(95), "screen": "trip"},
    ]


def comparable(body: dict) -> dict:
    body = dict(body)
    body.pop("updated_at")
    body.pop("local_time")  # the clock moves between the two reads
    if body["trip"]:
        body["trip"] = {k: v for k, v in body["trip"].items() if k != "id"}
    return body


def test_a_batch_sent_newest_first_gives_the_same_context_as_oldest_first(db_app, db_client):
    client, app = db_client, db_app
    operator = api_key(app, "operator")
    app_key = api_key(app, "app")
    fence_id = fence(client, operator)
    destination = moved(5000, 90)
    oldest_first, newest_first = make_user(client, app_key, "in-order"), make_user(client, app_key, "reversed")
    events = journey(destination, BERLIN)
    results = []
    for user, batch in ((oldest_first, events), (newest_first, list(reversed(events)))):
        grant(client, user, "location")
        results.append(accepted(client, user, *batch))

    assert results[0] == results[1]
    assert results[0]["accepted"] == len(events)
    assert [(e["type"], e["geofence_id"]) for e in results[0]["geofence_events"]] == [
        ("geofence.entered", fence_id), ("geofence.exited", fence_id)]
    first, second = snapshot(client, oldest_first), snapshot(client, newest_first)
    assert comparable(first) == comparable(second)
    assert first["activity"]["value"] == "driving" and first["app"]["screen"] == "trip"
    assert first["location"]["lat"] == pytest.approx(moved(2880, 180, destination)[0], abs=1e-6)
    assert first["speed_mps"] == pytest.approx(12.0, rel=1e-3)  # 120 m in 10 s
    assert first["trip"]["distance_m"] == pytest.approx(2880, abs=1)
    kinds = [[(t.event, t.fields.get("geofence_id")) for t in triggers(app, u)] for u in (oldest_first, newest_first)]
    assert kinds[0] == kinds[1] == [("geofence.entered", fence_id), ("geofence.exited", fence_id),
                                    ("trip.started", None)]


def test_duplicates_are_not_counted_and_a_batch_sent_twice_changes_nothing(app, client, operator_key, located):
    fence(client, operator_key)
    batch = [location(0, moved(500)), location(10, BERLIN), {"type": "activity", "at": at(11), "value": "still"}]

    first = accepted(client, located, *batch, batch[1])  # one event twice in the batch
    assert first["accepted"] == 3
    assert [e["type"] for e in first["geofence_events"]] == ["geofence.entered"]
    stored, fired, before = count(app, ContextEvent), len(triggers(app)), snapshot(client, located)

    again = accepted(client, located, *reversed(batch))
    assert again == {"accepted": 0, "geofence_events": []}
    assert count(app, ContextEvent) == stored == 3
    assert len(triggers(app)) == fired == 1
    after = snapshot(client, located)
    assert after["location"] == before["location"] and after["geofences"] == before["geofences"]
    assert after["updated_at"] >= before["updated_at"]


def test_late_events_are_stored_but_change_and_fire_nothing(app, client, operator_key, located):
    fence(client, operator_key)
    away = moved(2000)
    accepted(client, located, location(1000, away))

    # 1000 s older than the last event: past the 600 s window. It is inside the fence, yet enters nothing.
    late = accepted(client, located, location(0, BERLIN), {"type": "activity", "at": at(1), "value": "walking"})
    assert late == {"accepted": 2, "geofence_events": []}
    body = snapshot(client, located)
    assert body["location"]["lat"] == pytest.approx(away[0], abs=1e-6)
    assert body["activity"] is None and body["geofences"] == []
    assert triggers(app) == []
    with app.extensions["smartsvc"].database.session() as session:
        assert sorted(session.scalars(select(ContextEvent.late))) == [False, True, True]

    # Within the window but older than the last fix: applied where nothing newer is known, the fix stays.
    accepted(client, located, location(900, BERLIN), {"type": "activity", "at": at(901), "value": "walking"})
    body = snapshot(client, located)
    assert body["location"]["lat"] == pytest.approx(away[0], abs=1e-6)
    assert body["activity"]["value"] == "walking"
    assert triggers(app) == []


def test_events_are_stored_alike_on_both_databases_duplicates_once_late_ones_marked(db_app, db_client):
    client, app = db_client, db_app
    user = make_user(client, api_key(app, "app"), "stored")
    grant(client, user, "location")
    trip = {"type": "trip", "at": at(900), "destination": {"lat": 52.0000004999, "lon": 13.11111171},
            "mode": "car"}
    first = [location(1000, (52.1234567891, 13.9876543219), speed_mps=3, heading=90.5), trip,
             {"type": "app", "at": at(950), "screen": 'map "quoted" \\ back'}]
    assert accepted(client, user, *first, first[0])["accepted"] == 3  # the same event twice: stored once
    # Sent again with one late event (1000 s older than the last: past the 600 s window) and one new one.
    second = [*reversed(first), location(0, BERLIN), {"type": "activity", "at": at(1001), "value": "driving"}]
    assert accepted(client, user, *second)["accepted"] == 2

    with app.extensions["smartsvc"].database.session() as session:
        rows = session.execute(select(ContextEvent.type, ContextEvent.at, ContextEvent.data, ContextEvent.late)
                               .where(ContextEvent.user_id == uuid.UUID(user.id))
                               .order_by(ContextEvent.at)).all()
    assert [(r.type, r.at, r.data, r.late) for r in rows] == [
        ("location", T0, {"lat": 52.52, "lon": 13.405, "accuracy_m": 5.0}, True),
        ("trip", T0 + timedelta(seconds=900), {"destination": {"lat": 52.0, "lon": 13.111112}, "mode": "car"}, False),
        ("app", T0 + timedelta(seconds=950), {"screen": 'map "quoted" \\ back'}, False),
        ("location", T0 + timedelta(seconds=1000),
         {"lat": 52.123457, "lon": 13.987654, "accuracy_m": 5.0, "speed_mps": 3.0, "heading": 90.5}, False),
        ("activity", T0 + timedelta(seconds=1001), {"value": "driving"}, False),
    ]
    assert snapshot(client, user)["activity"]["value"] == "driving"


def test_location_without_consent_is_403_and_nothing_of_the_batch_is_stored(app, client, user):
    response = send(client, user, {"type": "activity", "at": at(0), "value": "walking"}, location(1))
    body = problem(response, 403)
    assert "location" in body["detail"]
    assert count(app, ContextEvent) == 0
    assert snapshot(client, user)["activity"] is None

    # Without location events the batch needs no consent.
    assert accepted(client, user, {"type": "activity", "at": at(0), "value": "walking"})["accepted"] == 1


def test_coordinates_are_rounded_to_six_decimals(app, client, located):
    accepted(client, located, location(0, (52.1234567891, 13.9876543219)),
             {"type": "trip", "at": at(1), "destination": {"lat": 52.0000004999, "lon": 13.11111171}})
    body = snapshot(client, located)
    assert (body["location"]["lat"], body["location"]["lon"]) == (52.123457, 13.987654)
    assert body["trip"]["destination"] == {"lat": 52.0, "lon": 13.111112}
    with app.extensions["smartsvc"].database.session() as session:
        data = session.scalar(select(ContextEvent.data).where(ContextEvent.type == "location"))
    assert (data["lat"], data["lon"]) == (52.123457, 13.987654)


# --------------------------------------------------------------------------- validation


def _many(n: int) -> list[dict]:
    return [{"type": "activity", "at": at(i), "value": "walking"} for i in range(n)]


FUTURE = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()


@pytest.mark.parametrize(("body", "field"), [
    ({"events": [location(0, (52.5, 13.4)) | {"lat": "52.5"}]}, "events.0.lat"),
    ({"events": [location(0) | {"accuracy_m": True}]}, "events.0.accuracy_m"),
    ({"events": [{"type": "activity", "value": "walking"}]}, "events.0.at"),
    ({"events": [_many(1)[0], location(0, (91.0, 13.4))]}, "events.1.lat"),
    ({"events": [location(0, (52.5, 181.0))]}, "events.0.lon"),
    ({"events": _many(501)}, "events"),
    ({"events": [{"type": "teleport", "at": at(0)}]}, "events.0.type"),
    ({"events": [{"at": at(0), "value": "walking"}]}, "events.0.type"),
    ({"events": [{"type": "activity", "at": "2026-06-01T10:00:00", "value": "walking"}]}, "events.0.at"),
    ({"events": [{"type": "activity", "at": FUTURE, "value": "walking"}]}, "events.0.at"),
    ({"events": [{"type": "activity", "at": "yesterday", "value": "walking"}]}, "events.0.at"),
    ({"events": [{"type": "activity", "at": at(0), "value": "flying"}]}, "events.0.value"),
    ({"events": [_many(1)[0], _many(2)[1], {"type": "trip", "at": at(5)}]}, "events.2.destination"),
    ({"events": [{"type": "trip", "at": at(5), "destination": {"lat": 52.5}}]}, "events.0.destination.lon"),
    ({"events": [{"type": "trip", "at": at(5), "destination": {"lat": 52.5, "lon": 13.4},
                  "product_id": "not-a-uuid"}]}, "events.0.product_id"),
    ({"events": [{"type": "trip", "at": at(5), "status": "paused"}]}, "events.0.status"),
    ({"events": [{"type": "app", "at": at(5), "screen": "  "}]}, "events.0.screen"),
    ({"events": [{"type": "app", "at": at(5), "screen": "map", "colour": "red"}]}, "events.0.colour"),
    ({"events": ["location"]}, "events.0"),
    ({"events": {"type": "app"}}, "events"),
    ({}, "events"),
])
def test_bad_events_are_422_naming_the_field(app, client, located, body, field):
    response = client.post("/v1/me/context", json=body, headers=located.headers)
    problem(response, 422, field)
    assert count(app, ContextEvent) == 0


def test_a_trip_names_only_the_users_own_product(app, client, operator_key, located, other_user):
    theirs = own_product(client, operator_key, other_user)
    unknown = str(uuid.uuid4())
    answers = []
    for product in (theirs, unknown):
        trip = {"type": "trip", "at": at(0), "destination": {"lat": 52.5, "lon": 13.4}, "product_id": product}
        body = problem(send(client, located, {"type": "app", "at": at(0), "screen": "map"}, trip), 422,
                       "events.1.product_id")
        answers.append(body["detail"].replace(product, "<id>"))
    assert answers[0] == answers[1]  # another user's product looks exactly like an unknown one
    assert count(app, ContextEvent) == 0


# --------------------------------------------------------------------------- geofences


def test_entering_and_leaving_a_geofence_through_the_api(app, client, operator_key, located):
    fence_id = fence(client, operator_key)
    outside = moved(800)

    assert accepted(client, located, location(0, outside))["geofence_events"] == []
    entered = accepted(client, located, location(60, BERLIN))["geofence_events"]
    assert entered == [{"type": "geofence.entered", "geofence_id": fence_id, "tag": "dealer",
                        "metadata": {"dealer_id": "B-17"}, "at": at(60), "inside_since": at(60)}]
    inside = snapshot(client, located)["geofences"]
    assert [(g["geofence_id"], g["tag"], g["dwelled"]) for g in inside] == [(fence_id, "dealer", False)]
    assert datetime.fromisoformat(inside[0]["since"]) == T0 + timedelta(seconds=60)

    exited = accepted(client, located, location(160, outside))["geofence_events"]
    assert [(e["type"], e["geofence_id"], e["inside_s"], e["reason"]) for e in exited] == [
        ("geofence.exited", fence_id, 100, "left")]
    assert snapshot(client, located)["geofences"] == []
    fired = triggers(app, located)
    assert [(t.event, t.at) for t in fired] == [("geofence.entered", T0 + timedelta(seconds=60)),
                                               ("geofence.exited", T0 + timedelta(seconds=160))]
    assert fired[0].fields == {"geofence_id": fence_id, "tag": "dealer", "metadata": {"dealer_id": "B-17"}}
    assert fired[1].fields["inside_s"] == 100 and fired[1].rule_id is None


def test_the_geofence_timer_fires_a_dwell_without_further_fixes_once(app, client, operator_key, located):
    fence_id = fence(client, operator_key, dwell_s=120)
    accepted(client, located, location(0, moved(800)), location(10, BERLIN))
    container = app.extensions["smartsvc"]
    with container.database.session() as session:
        due = session.scalar(select(UserContext.geofence_due_at))
    assert due == T0 + timedelta(seconds=130)

    assert run_geofence_timer(container, T0 + timedelta(seconds=100)) == 0  # not yet
    assert triggers(app, located, "geofence.dwelled") == []
    assert run_geofence_timer(container) == 1
    assert run_geofence_timer(container) == 0  # run twice: one effect
    dwelled = triggers(app, located, "geofence.dwelled")
    assert [(t.fields["geofence_id"], t.fields["dwell_s"], t.at) for t in dwelled] == [
        (fence_id, 120, T0 + timedelta(seconds=130))]
    assert snapshot(client, located)["geofences"][0]["dwelled"] is True
    with container.database.session() as session:
        assert session.scalar(select(UserContext.geofence_due_at)) is None


# --------------------------------------------------------------------------- trips


def test_a_trip_starts_approaches_once_per_rule_and_arrives(app, client, operator_key, located):
    far_rule = approaching_rule(client, operator_key, within_m=1500)
    near_rule = approaching_rule(client, operator_key, within_m=500)
    eta_rule = approaching_rule(client, operator_key, within_s=60)
    product = own_product(client, operator_key, located)
    destination = moved(10_000, 90)
    toward = lambda metres: moved(metres, 270, destination)  # noqa: E731

    accepted(client, located, location(0, toward(3000), speed_mps=5.0),
             {"type": "trip", "at": at(1), "destination": {"lat": destination[0], "lon": destination[1]},
              "product_id": product, "mode": "car"})
    started = triggers(app, located, "trip.started")
    assert [(t.fields["distance_m"], str(t.product_id)) for t in started] == [(pytest.approx(3000, abs=1), product)]

    accepted(client, located, location(100, toward(1200), speed_mps=5.0))  # ETA 240 s
    accepted(client, located, location(110, toward(1100), speed_mps=5.0))
    approaching = triggers(app, located, "trip.approaching")
    assert [str(t.rule_id) for t in approaching] == [far_rule]
    assert approaching[0].fields == {"distance_m": pytest.approx(1200, abs=1), "eta_s": 240}
    assert str(approaching[0].product_id) == product

    accepted(client, located, location(200, toward(450), speed_mps=10.0))  # ETA 45 s: both remaining rules
    accepted(client, located, location(210, toward(400), speed_mps=10.0))
    assert sorted(str(t.rule_id) for t in triggers(app, located, "trip.approaching")) == sorted(
        [far_rule, near_rule, eta_rule])
    assert snapshot(client, located)["trip"]["distance_m"] == pytest.approx(400, abs=1)

    accepted(client, located, location(260, toward(40), speed_mps=2.0))
    arrived = triggers(app, located, "trip.arrived")
    assert [(t.fields["distance_m"], str(t.product_id)) for t in arrived] == [(pytest.approx(40, abs=1), product)]
    assert snapshot(client, located)["trip"] is None  # the trip ended

    fired = len(triggers(app))
    accepted(client, located, location(270, toward(30)), location(280, toward(20)))
    resent = accepted(client, located, location(260, toward(40), speed_mps=2.0), location(210, toward(400)))
    assert resent["accepted"] == 0
    assert len(triggers(app)) == fired  # no second arrival, no approach again


def test_a_trip_can_be_ended_by_the_app(client, located):
    accepted(client, located, {"type": "trip", "at": at(0), "destination": {"lat": 52.5, "lon": 13.4}})
    assert snapshot(client, located)["trip"] is not None
    accepted(client, located, {"type": "trip", "at": at(10), "status": "ended"})
    assert snapshot(client, located)["trip"] is None


def test_the_snapshot_shows_distance_and_eta(app, client, operator_key, located):
    product = own_product(client, operator_key, located)
    destination = moved(4000)
    accepted(client, located, {"type": "trip", "at": at(0), "destination": {"lat": destination[0],
                                                                           "lon": destination[1]},
                               "product_id": product},
             location(10, moved(2000, 180, destination)), location(20, moved(1800, 180, destination)),
             {"type": "activity", "at": at(21), "value": "driving"})
    trip = snapshot(client, located)["trip"]
    assert trip["distance_m"] == pytest.approx(1800, abs=1)
    assert trip["eta_s"] == 90  # 200 m in 10 s → 20 m/s
    assert abs((datetime.fromisoformat(trip["eta"]) - (T0 + timedelta(seconds=110))).total_seconds()) < 1
    assert trip["product_id"] == product and trip["mode"] is None

    accepted(client, located, {"type": "activity", "at": at(30), "value": "still"})
    body = snapshot(client, located)
    assert body["trip"]["eta_s"] is None and body["trip"]["eta"] is None
    assert body["trip"]["distance_m"] == pytest.approx(1800, abs=1)
    assert body["time_zone"] == "Europe/Berlin" and len(body["local_time"]) == 5 and 1 <= body["weekday"] <= 7
    assert [p["id"] for p in body["products"]] == [product]


def test_context_facts_use_the_rule_language_names(app, client, operator_key, located):
    product = own_product(client, operator_key, located, length_m=2.69)
    grant(client, located, "telemetry")
    reading = client.post(f"/v1/me/products/{product}/telemetry", headers=located.headers,
                          json={"at": at(0), "battery_pct": 42}).get_json()["id"]
    container = app.extensions["smartsvc"]
    process_reading(container.database, uuid.UUID(reading))
    destination = moved(3000)
    accepted(client, located, {"type": "trip", "at": at(0), "destination": {"lat": destination[0],
                                                                           "lon": destination[1]},
                               "mode": "car"}, location(5, BERLIN, speed_mps=10.0))
    now = datetime(2026, 1, 5, 7, 30, tzinfo=timezone.utc)  # a Monday, 08:30 in Berlin
    with container.database.session() as session:
        facts = context_facts(session, uuid.UUID(located.id), now=now)
    assert facts["user"] == {"time_zone": "Europe/Berlin", "local_time": "08:30", "weekday": 1}
    assert facts["product"]["attributes"]["length_m"] == 2.69
    assert facts["product"]["telemetry"] == {"battery_pct": 42}
    assert facts["product"]["kind"] == "car"
    assert facts["trip"]["distance_m"] == pytest.approx(3000, abs=1)
    assert facts["trip"]["eta_s"] == 300 and facts["trip"]["mode"] == "car"
    with container.database.session() as session:
        assert context_facts(session, uuid.UUID(located.id), product_id=uuid.uuid4(), now=now).get("product") is None


# --------------------------------------------------------------------------- isolation


def test_another_user_never_sees_this_users_context(app, client, operator_key, located, other_user):
    fence(client, operator_key)
    accepted(client, located, location(0, (52.520001, 13.405001)),
             {"type": "app", "at": at(1), "screen": "secret-screen"},
             {"type": "trip", "at": at(2), "destination": {"lat": 48.137, "lon": 11.575}})
    mine = snapshot(client, located)
    assert mine["location"] is not None and mine["geofences"]

    theirs = client.get("/v1/me/context", headers=other_user.headers)
    assert theirs.status_code == 200
    text = theirs.get_data(as_text=True)
    assert "52.520001" not in text and "secret-screen" not in text and "48.137" not in text
    body = theirs.get_json()
    assert body["location"] is None and body["trip"] is None and body["geofences"] == [] and body["app"] is None
    assert client.get("/v1/me/context").status_code == 401
    assert client.get("/v1/me/context", headers=bearer(operator_key)).status_code == 403
