"""The scheduler, on SQLite and PostgreSQL: a ``schedule`` rule fires once per local day per user, at its
local time in each user's own time zone, and late (beat was down) but never on the wrong day."""

from __future__ import annotations

import uuid
from datetime import datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from smartsvc.models import Suggestion, TriggerRecord
from smartsvc.services.engine import handle_trigger
from smartsvc.services.schedule import ScheduleMemo, run_schedules
from tests.support.factories import api_key, bearer, grant, make_user

# Two days ahead, so every user below existed at the scheduled moments.
DAY = (datetime.now(timezone.utc) + timedelta(days=2)).date()
ZONES = {"alice": "Europe/Paris", "bob": "America/New_York", "carol": "Asia/Tokyo"}


def utc(hour: int, minute: int = 0, day_offset: int = 0) -> datetime:
    return datetime.combine(DAY + timedelta(days=day_offset), time(hour, minute), timezone.utc)


def local_in_utc(zone: str, hour: int, minute: int = 0, day_offset: int = 0) -> datetime:
    moment = datetime.combine(DAY + timedelta(days=day_offset), time(hour, minute), ZoneInfo(zone))
    return moment.astimezone(timezone.utc)


@pytest.fixture
def world(db_app, db_client) -> dict[str, Any]:
    operator, app_key = api_key(db_app, "operator"), api_key(db_app, "app")
    users = {name: make_user(db_client, app_key, name, zone) for name, zone in ZONES.items()}
    grant(db_client, users["alice"], "proactive_push")
    return {"app": db_app, "client": db_client, "operator": operator, "users": users,
            "container": db_app.extensions["smartsvc"], "memo": ScheduleMemo()}


def schedule_rule(world: dict[str, Any], at: str = "09:00", **trigger: Any) -> str:
    body = {"name": f"daily check {at}", "trigger": {"event": "schedule", "at": at, **trigger},
            "action": {"recipe": "message", "params": {"title": "Your {event.at} check",
                                                       "body": "Good morning in {user.time_zone}."}}}
    response = world["client"].post("/v1/rules", json=body, headers=bearer(world["operator"]))
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def tick(world: dict[str, Any], now: datetime, memo: ScheduleMemo | None = None) -> int:
    container = world["container"]
    return run_schedules(container.database, container.rule_cache, memo or world["memo"], now=now)


def fired(world: dict[str, Any]) -> list[tuple[str, datetime, str]]:
    """(user name, at, dedupe key) of every schedule trigger."""
    names = {uuid.UUID(user.id): name for name, user in world["users"].items()}
    with world["container"].database.session() as session:
        rows = session.scalars(select(TriggerRecord).where(TriggerRecord.event == "schedule")
                               .order_by(TriggerRecord.at))
        return [(names[row.user_id], row.at, row.dedupe_key) for row in rows]


def test_each_user_gets_the_rule_at_its_local_time_once_a_day(world):
    rule_id = schedule_rule(world)
    # 08:30 UTC: 09:00 has passed in Paris and Tokyo, not yet in New York.
    assert tick(world, utc(8, 30)) == 2
    assert {(name, at) for name, at, _ in fired(world)} == {
        ("alice", local_in_utc("Europe/Paris", 9)), ("carol", local_in_utc("Asia/Tokyo", 9))}
    alice_key = next(key for name, _, key in fired(world) if name == "alice")
    assert alice_key == f"schedule:{rule_id}:{world['users']['alice'].id}:{DAY.isoformat()}"

    assert tick(world, utc(8, 31)) == 0  # the next minute: already had it today
    assert tick(world, utc(9, 0), ScheduleMemo()) == 0  # another process, same answer from the database
    assert tick(world, utc(15, 0)) == 1  # 11:00 in New York
    assert [name for name, _, _ in fired(world)].count("bob") == 1
    assert tick(world, utc(15, 1)) == 0

    next_day = tick(world, utc(12, 0, day_offset=1))  # 14:00 in Paris, 21:00 in Tokyo, 08:00 in New York
    assert next_day == 2 and len(fired(world)) == 5


def test_a_missed_minute_fires_later_that_day_but_a_missed_day_is_not_made_up(world):
    schedule_rule(world)
    # Beat was down from before 09:00 until 13:00 Paris time: alice still gets today's check, once
    # (and carol, for whom it is 20:00 in Tokyo).
    assert tick(world, local_in_utc("Europe/Paris", 13)) == 2
    assert [at for name, at, _ in fired(world) if name == "alice"] == [local_in_utc("Europe/Paris", 9)]
    # Then down for the whole of the next day: at 08:00 the day after, nothing is owed for it.
    tick(world, local_in_utc("Europe/Paris", 8, day_offset=2))
    missed_day = (DAY + timedelta(days=1)).isoformat()
    assert not any(key.endswith(missed_day) for _, _, key in fired(world))
    assert [name for name, _, _ in fired(world)].count("alice") == 1


def test_weekdays_are_the_users_local_weekdays(world):
    # 23:30 UTC: still DAY in New York (19:30), already the next day in Tokyo (08:30), 01:30 in Paris.
    now = utc(23, 30)
    today, tomorrow = DAY.isoweekday(), (DAY + timedelta(days=1)).isoweekday()
    tomorrows = schedule_rule(world, at="08:00", weekdays=[tomorrow])
    todays = schedule_rule(world, at="08:05", weekdays=[today])

    assert tick(world, now) == 2
    by_rule = {key.split(":")[1]: name for name, _, key in fired(world)}
    assert by_rule == {tomorrows: "carol", todays: "bob"}


def test_users_who_did_not_exist_at_the_scheduled_time_are_not_due(world):
    schedule_rule(world, at="00:00")
    # Today at local midnight every test user was yet to be created.
    assert tick(world, datetime.now(timezone.utc)) == 0


def test_a_schedule_trigger_runs_its_rule_and_makes_the_message(world):
    schedule_rule(world)
    tick(world, utc(8, 30))
    alice = uuid.UUID(world["users"]["alice"].id)
    with world["container"].database.session() as session:
        trigger = session.scalars(select(TriggerRecord).where(TriggerRecord.user_id == alice)).one()
        assert trigger.fields == {"at": "09:00"} and trigger.rule_id is not None

    assert handle_trigger(world["container"], trigger.id) == 1
    with world["container"].database.session() as session:
        [suggestion] = session.scalars(select(Suggestion)).all()
    assert (suggestion.title, suggestion.body) == ("Your 09:00 check", "Good morning in Europe/Paris.")
    assert suggestion.reason["trigger"]["event"] == "schedule"


def _own_car(world: dict[str, Any], user: Any, name: str, length_m: float) -> None:
    client = world["client"]
    model = client.post("/v1/catalog/models", headers=bearer(world["operator"]),
                        json={"kind": "car", "brand": "smart", "name": name, "attributes": {"length_m": length_m}})
    assert model.status_code == 201, model.get_json()
    owned = client.post("/v1/me/products", json={"model_id": model.get_json()["id"]}, headers=user.headers)
    assert owned.status_code == 201, owned.get_json()


def test_the_daily_check_looks_at_each_of_the_users_products(world):
    """A schedule trigger names no product: each car is checked, not only the first one the user added."""
    alice = world["users"]["alice"]
    _own_car(world, alice, "fortwo", 2.69)  # the first: the product the facts pick by themselves
    _own_car(world, alice, "estate", 4.9)
    body = {"name": "long car check", "trigger": {"event": "schedule", "at": "09:00"},
            "conditions": {"all": [{"fact": "product.attributes.length_m", "op": ">", "value": 4.0}]},
            "action": {"recipe": "message", "params": {"title": "Check the {product.name}",
                                                       "body": "{product.name}: time for its check."}}}
    response = world["client"].post("/v1/rules", json=body, headers=bearer(world["operator"]))
    assert response.status_code == 201, response.get_json()
    tick(world, utc(8, 30))
    with world["container"].database.session() as session:
        trigger = session.scalars(select(TriggerRecord).where(TriggerRecord.user_id == uuid.UUID(alice.id))).one()

    assert handle_trigger(world["container"], trigger.id) == 1
    assert handle_trigger(world["container"], trigger.id) == 0  # handled twice: still one
    with world["container"].database.session() as session:
        [suggestion] = session.scalars(select(Suggestion)).all()
    assert suggestion.title == "Check the estate"
    assert suggestion.reason["facts"] == {"product.attributes.length_m": 4.9}


def test_the_daily_check_of_two_products_makes_one_suggestion_each(world):
    alice = world["users"]["alice"]
    _own_car(world, alice, "fortwo", 2.69)
    _own_car(world, alice, "estate", 4.9)
    body = {"name": "every car", "trigger": {"event": "schedule", "at": "09:00"},
            "action": {"recipe": "message", "params": {"title": "Check the {product.name}", "body": "Daily."}}}
    assert world["client"].post("/v1/rules", json=body, headers=bearer(world["operator"])).status_code == 201
    tick(world, utc(8, 30))
    with world["container"].database.session() as session:
        trigger = session.scalars(select(TriggerRecord).where(TriggerRecord.user_id == uuid.UUID(alice.id))).one()
    assert handle_trigger(world["container"], trigger.id) == 2
    with world["container"].database.session() as session:
        titles = sorted(session.scalars(select(Suggestion.title)).all())
    assert titles == ["Check the estate", "Check the fortwo"]


def test_a_daily_rule_that_does_not_read_the_product_runs_once_for_a_user_with_two(world):
    alice = world["users"]["alice"]
    _own_car(world, alice, "fortwo", 2.69)
    _own_car(world, alice, "estate", 4.9)
    schedule_rule(world)  # "Good morning in {user.time_zone}": nothing about a car
    tick(world, utc(8, 30))
    with world["container"].database.session() as session:
        trigger = session.scalars(select(TriggerRecord).where(TriggerRecord.user_id == uuid.UUID(alice.id))).one()
    assert handle_trigger(world["container"], trigger.id) == 1
    with world["container"].database.session() as session:
        assert len(session.scalars(select(Suggestion)).all()) == 1
