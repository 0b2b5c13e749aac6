"""The engine end to end, on SQLite and PostgreSQL: a phone's context → a trigger → rules → recipe →
one suggestion.

Context goes in through ``POST /v1/me/context`` and telemetry through the API
and the telemetry use case; the engine is the outbox task's use case
(:func:`handle_trigger`), run here in-process.
"""

from __future__ import annotations

import sys
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from geographiclib.geodesic import Geodesic
from shapely.geometry import LineString
from sqlalchemy import select

from geodata.model import Rule as SpotRule
from geodata.model import Spot
from smartsvc.models import OutboxMessage, Suggestion, TelemetryReading, TriggerRecord
from smartsvc.services import recipes
from smartsvc.services.engine import MAX_RECIPE_ATTEMPTS, handle_trigger
from smartsvc.services.telemetry import process_reading
from smartsvc.services.triggers import HANDLE_TASK
from tests.support.factories import api_key, bearer, grant, make_user
from tests.support.geodata import store_dataset
from tests.support.rules import example_rule

DESTINATION = (48.8500, 2.3500)
T0 = datetime.now(timezone.utc).replace(microsecond=0)  # set per test by the fixture below
FREE = (SpotRule(None, "parking"),)


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def south_of_destination(metres: float, destination: tuple[float, float] = DESTINATION) -> tuple[float, float]:
    p = Geodesic.WGS84.Direct(destination[0], destination[1], 180, metres)
    return p["lat2"], p["lon2"]


def east_of_destination(metres: float, north: float = 5.0) -> tuple[float, float]:
    p = Geodesic.WGS84.Direct(DESTINATION[0], DESTINATION[1], 90, metres)
    p = Geodesic.WGS84.Direct(p["lat2"], p["lon2"], 0, north)
    return p["lon2"], p["lat2"]


def street() -> list[Spot]:
    """A 5.4 m gap only a small car fits, 20 m from the destination, free at any time."""
    return [Spot(LineString([east_of_destination(20), east_of_destination(25.4)]), kind="curb",
                 orientation="parallel", length_m=5.4, rules=FREE, source_feature_id="gap")]


def model(client: Any, operator: str, name: str, **attributes: Any) -> str:
    response = client.post("/v1/catalog/models", headers=bearer(operator),
                           json={"kind": "car", "brand": "smart", "name": name, "attributes": attributes})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def own(client: Any, user: Any, model_id: str) -> str:
    response = client.post("/v1/me/products", json={"model_id": model_id}, headers=user.headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def add_rule(client: Any, operator: str, body: dict[str, Any]) -> str:
    response = client.post("/v1/rules", json=body, headers=bearer(operator))
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


@pytest.fixture(autouse=True)
def recent_start(monkeypatch) -> None:
    """Events start 10 minutes before each test: in the past, and their suggestions not yet expired."""
    monkeypatch.setattr(sys.modules[__name__], "T0",
                        (datetime.now(timezone.utc) - timedelta(minutes=10)).replace(microsecond=0))


@pytest.fixture
def world(db_app, db_client, monkeypatch) -> dict[str, Any]:
    operator, app_key = api_key(db_app, "operator"), api_key(db_app, "app")
    alice = make_user(db_client, app_key, "alice", "Europe/Paris")
    grant(db_client, alice, "location", "proactive_push", "telemetry")
    products = {"smart": own(db_client, alice, model(db_client, operator, "fortwo", length_m=2.69, width_m=1.66)),
                "golf": own(db_client, alice, model(db_client, operator, "golf-sized", length_m=4.5))}
    store_dataset(db_app.extensions["smartsvc"].database, street(), time_zone="Europe/Paris")
    return {"app": db_app, "client": db_client, "operator": operator, "alice": alice, "products": products,
            "container": db_app.extensions["smartsvc"], "monkeypatch": monkeypatch}


def drive(world: dict[str, Any], product: str, destination: tuple[float, float] = DESTINATION) -> None:
    """Alice starts a trip with ``product`` and drives to 1.4 km of ``destination``."""
    far, near = south_of_destination(3000, destination), south_of_destination(1400, destination)
    events = [
        {"type": "trip", "at": at(0), "destination": {"lat": destination[0], "lon": destination[1]},
         "product_id": world["products"][product]},
        {"type": "activity", "at": at(1), "value": "driving"},
        {"type": "location", "at": at(10), "lat": far[0], "lon": far[1], "accuracy_m": 5, "speed_mps": 12.0},
        {"type": "location", "at": at(140), "lat": near[0], "lon": near[1], "accuracy_m": 5, "speed_mps": 12.0},
    ]
    response = world["client"].post("/v1/me/context", json={"events": events}, headers=world["alice"].headers)
    assert response.status_code == 202, response.get_json()


def triggers(world: dict[str, Any], event: str) -> list[TriggerRecord]:
    with world["container"].database.session() as session:
        return list(session.scalars(select(TriggerRecord).where(TriggerRecord.event == event)
                                    .order_by(TriggerRecord.at)))


def message_of(world: dict[str, Any], trigger_id: uuid.UUID) -> OutboxMessage:
    with world["container"].database.session() as session:
        return next(m for m in session.scalars(select(OutboxMessage).where(OutboxMessage.task == HANDLE_TASK))
                    if m.payload["trigger_id"] == str(trigger_id))


def handle(world: dict[str, Any], trigger: TriggerRecord) -> int:
    return handle_trigger(world["container"], trigger.id, message_of(world, trigger.id).id)


def suggestions(world: dict[str, Any]) -> list[Suggestion]:
    with world["container"].database.session() as session:
        return list(session.scalars(select(Suggestion).order_by(Suggestion.created_at)))


def processed(world: dict[str, Any], trigger: TriggerRecord) -> bool:
    with world["container"].database.session() as session:
        return session.get(TriggerRecord, trigger.id).processed_at is not None


# --------------------------------------------------------------------------- trip.approaching → spots


def test_a_small_car_approaching_gets_one_suggestion_with_the_spots_it_fits_and_why(world):
    rule_id = add_rule(world["client"], world["operator"], example_rule())
    drive(world, "smart")
    [trigger] = triggers(world, "trip.approaching")

    assert handle(world, trigger) == 1

    [suggestion] = suggestions(world)
    assert suggestion.kind == "spots_near_destination" and suggestion.status == "new"
    assert suggestion.title == "1 spot your smart fortwo fits near your destination"
    assert [spot["source"]["feature_id"] for spot in suggestion.payload["spots"]] == ["gap"]
    assert suggestion.payload["destination"] == {"lat": DESTINATION[0], "lon": DESTINATION[1]}
    assert suggestion.reason["rule"] == {"id": rule_id, "name": "small spots before arrival"}
    assert suggestion.reason["trigger"]["event"] == "trip.approaching"
    assert suggestion.reason["trigger"]["fields"]["distance_m"] == pytest.approx(1400, abs=1)
    assert suggestion.reason["facts"] == {"product.attributes.length_m": 2.69}
    assert suggestion.dedupe_key == f"{trigger.id}:{rule_id}"
    assert processed(world, trigger) and message_of(world, trigger.id).completed_at is not None


def test_a_trigger_handled_twice_makes_one_suggestion(world):
    add_rule(world["client"], world["operator"], example_rule())
    drive(world, "smart")
    [trigger] = triggers(world, "trip.approaching")

    assert handle(world, trigger) == 1
    assert handle(world, trigger) == 0
    assert handle_trigger(world["container"], trigger.id) == 0
    assert len(suggestions(world)) == 1


def test_a_users_triggers_run_in_the_order_they_were_noticed_whichever_message_comes_first(world):
    add_rule(world["client"], world["operator"], example_rule())
    add_rule(world["client"], world["operator"], example_rule(
        name="trip started", trigger={"event": "trip.started"}, conditions={"all": []},
        action={"recipe": "message", "params": {"title": "Have a good trip", "body": "We watch the parking."}}))
    drive(world, "smart")
    [started], [approaching] = triggers(world, "trip.started"), triggers(world, "trip.approaching")

    # A second worker takes the later trigger's message first: the earlier trigger still runs first.
    assert handle(world, approaching) == 1
    assert processed(world, started) and processed(world, approaching)
    first, second = suggestions(world)
    assert (first.kind, second.kind) == ("message", "spots_near_destination")
    assert first.created_at <= second.created_at

    # The earlier trigger's own message then only completes.
    assert handle(world, started) == 0
    assert message_of(world, started.id).completed_at is not None
    assert len(suggestions(world)) == 2


def test_a_trigger_run_by_a_later_ones_task_while_its_own_task_waited_still_completes_its_message(world):
    from smartsvc.services import engine

    if world["container"].settings.is_sqlite:
        pytest.skip("SQLite runs one writer at a time: a task cannot wait inside its transaction for another's")
    add_rule(world["client"], world["operator"], example_rule())
    drive(world, "smart")
    [started], [approaching] = triggers(world, "trip.started"), triggers(world, "trip.approaching")
    real_get = engine.Session.get
    # The started trigger's task reads it unprocessed, then waits for the user's lock while the
    # approaching trigger's task runs both: simulated by running that task inside the lock wait.
    calls = []

    def lock_wait(session, entity, ident, **kwargs):
        if entity is engine.User and kwargs.get("with_for_update") and not calls:
            calls.append(ident)
            assert handle(world, approaching) == 1
        return real_get(session, entity, ident, **kwargs)

    world["monkeypatch"].setattr(engine.Session, "get", lock_wait)
    assert handle(world, started) == 0
    assert calls and processed(world, started)
    assert message_of(world, started.id).completed_at is not None


def test_a_rule_whose_conditions_fail_makes_nothing(world):
    add_rule(world["client"], world["operator"], example_rule())
    drive(world, "golf")  # 4.5 m: the rule is for cars of 3 m at most
    [trigger] = triggers(world, "trip.approaching")

    assert handle(world, trigger) == 0
    assert suggestions(world) == [] and processed(world, trigger)


def test_a_recipe_that_finds_nothing_makes_nothing(world):
    add_rule(world["client"], world["operator"], example_rule())
    drive(world, "smart", destination=(48.90, 2.40))  # no parking data there
    [trigger] = triggers(world, "trip.approaching")

    assert handle(world, trigger) == 0
    assert suggestions(world) == [] and processed(world, trigger)


def test_the_trips_destination_is_used_even_after_the_user_arrived(world):
    add_rule(world["client"], world["operator"], example_rule())
    drive(world, "smart")
    arrive = {"type": "location", "at": at(260), "lat": DESTINATION[0], "lon": DESTINATION[1], "accuracy_m": 5}
    response = world["client"].post("/v1/me/context", json={"events": [arrive]}, headers=world["alice"].headers)
    assert response.status_code == 202 and triggers(world, "trip.arrived")  # the trip has ended

    [trigger] = triggers(world, "trip.approaching")
    assert handle(world, trigger) == 1
    assert suggestions(world)[0].payload["destination"] == {"lat": DESTINATION[0], "lon": DESTINATION[1]}


# --------------------------------------------------------------------------- a failing recipe


def approaching_with_a_broken_spots_recipe(world: dict[str, Any], monkeypatch) -> list[TriggerRecord]:
    """Two rules on trip.approaching, the spots one with a recipe that raises; alice drives: their triggers,
    the spots rule's first."""
    add_rule(world["client"], world["operator"], example_rule())
    add_rule(world["client"], world["operator"], example_rule(
        name="hello", action={"recipe": "message", "params": {"title": "Almost there", "body": "Hi"}}))

    def broken(*args: Any) -> None:
        raise RuntimeError("the recipe has a bug")

    monkeypatch.setitem(recipes.RECIPES, "spots_near_destination", broken)
    drive(world, "smart")
    triggered = triggers(world, "trip.approaching")
    assert len(triggered) == 2  # one per rule (each has its own distance)
    return sorted(triggered, key=lambda t: _rule_name(world, t.rule_id) != "small spots before arrival")


def test_a_failing_recipe_keeps_the_trigger_for_a_retry_without_holding_back_the_other_rules(world, monkeypatch):
    spots_trigger, other = approaching_with_a_broken_spots_recipe(world, monkeypatch)
    message = message_of(world, spots_trigger.id)
    _set_attempts(world, message.id, 1)

    assert handle(world, spots_trigger) == 0
    assert not processed(world, spots_trigger) and message_of(world, spots_trigger.id).completed_at is None

    assert handle(world, other) == 1  # the other rule is not blocked

    _set_attempts(world, message.id, MAX_RECIPE_ATTEMPTS)
    assert handle(world, spots_trigger) == 0
    assert processed(world, spots_trigger) and message_of(world, spots_trigger.id).completed_at is not None
    assert [s.kind for s in suggestions(world)] == ["message"]


def _rule_name(world: dict[str, Any], rule_id: uuid.UUID) -> str:
    response = world["client"].get(f"/v1/rules/{rule_id}", headers=bearer(world["operator"]))
    return response.get_json()["name"]


def _set_attempts(world: dict[str, Any], outbox_id: int, attempts: int) -> None:
    with world["container"].database.unit_of_work() as uow:
        uow.session.get(OutboxMessage, outbox_id).attempts = attempts
        uow.commit()


# --------------------------------------------------------------------------- telemetry


def read(world: dict[str, Any], seconds: float, **values: Any) -> list[TriggerRecord]:
    """Alice's smart reports ``values`` at T0 + ``seconds``; the worker folds it in; the new triggers."""
    product = world["products"]["smart"]
    response = world["client"].post(f"/v1/me/products/{product}/telemetry", headers=world["alice"].headers,
                                    json={"at": at(seconds), **values})
    assert response.status_code in (201, 202), response.get_json()
    before = {t.id for t in triggers(world, "telemetry.updated")}
    with world["container"].database.session() as session:
        reading = session.scalars(select(TelemetryReading).order_by(TelemetryReading.received_at.desc(),
                                                                    TelemetryReading.id.desc())).first()
    assert process_reading(world["container"].database, reading.id)
    return [t for t in triggers(world, "telemetry.updated") if t.id not in before]


def low_battery_rule(world: dict[str, Any]) -> None:
    add_rule(world["client"], world["operator"], {
        "name": "battery low", "trigger": {"event": "telemetry.threshold", "fact": "product.telemetry.battery_pct",
                                           "op": "<", "value": 20},
        "action": {"recipe": "message", "params": {"title": "Battery at {event.value} %",
                                                   "body": "Your {product.name} needs charging."}}})


def test_a_telemetry_threshold_fires_when_crossed_and_not_again_below_it(world):
    low_battery_rule(world)
    made = []
    for seconds, battery in ((0, 30), (60, 18), (120, 15)):
        [trigger] = read(world, seconds, battery_pct=battery)
        assert trigger.fields["changes"]["product.telemetry.battery_pct"]["value"] == battery
        made.append(handle(world, trigger))

    assert made == [0, 1, 0]
    [suggestion] = suggestions(world)
    assert (suggestion.title, suggestion.body) == ("Battery at 18 %", "Your fortwo needs charging.")
    assert suggestion.reason["trigger"]["event"] == "telemetry.threshold"
    assert suggestion.reason["trigger"]["fields"]["previous_value"] == 30


def test_an_older_reading_arriving_late_fires_nothing(world):
    low_battery_rule(world)
    [newer] = read(world, 120, battery_pct=50)
    assert newer.fields["fields"] == ["battery_pct"]
    assert read(world, 60, battery_pct=10) == []  # older than the last one: not the battery now
