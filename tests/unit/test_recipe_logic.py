"""The pure parts of the recipes and the scheduler: when a service is due, which charger fits, when a
schedule is due in a time zone, whether a place is open."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from zoneinfo import ZoneInfo

from smartsvc.services.recipes.charger_on_route import battery_need, compatible
from smartsvc.services.recipes.context import distance_text, eta, trip_key
from smartsvc.services.recipes.places import Place, opening_state
from smartsvc.services.recipes.service_due import due, next_service_km
from smartsvc.services.rule_set import ActiveRule
from smartsvc.services.schedule import due_slot

NOW = datetime(2025, 6, 3, 8, 0, tzinfo=timezone.utc)  # a Tuesday


def test_the_next_service_is_the_next_multiple_of_the_interval_above_the_odometer():
    assert next_service_km(14_200, 15_000) == 15_000
    assert next_service_km(15_000, 15_000) == 30_000  # the service at 15,000 is taken as done
    assert next_service_km(0, 15_000) == 15_000


def test_a_service_800_km_away_is_due_within_1000_km_but_not_within_500():
    facts = {"product": {"attributes": {"service_interval_km": 15_000}, "telemetry": {"odometer_km": 14_200}}}
    found = due(facts, NOW, 14, 1000)
    assert found is not None and found.due_at_km == 15_000 and found.remaining_km == 800
    assert due(facts, NOW, 14, 500) is None


def test_a_service_date_within_the_days_or_past_is_due():
    soon = {"product": {"telemetry": {"service_due_at": (NOW + timedelta(days=5)).isoformat()}}}
    late = {"product": {"telemetry": {"service_due_at": (NOW - timedelta(days=2)).isoformat()}}}
    later = {"product": {"telemetry": {"service_due_at": (NOW + timedelta(days=30)).isoformat()}}}
    assert due(soon, NOW, 14, 1000).to_dict(NOW)["days_left"] == 5
    assert due(late, NOW, 14, 1000) is not None
    assert due(later, NOW, 14, 1000) is None
    assert due({}, NOW, 14, 1000) is None


def place(**properties) -> Place:
    return Place("d.0", "pois", 48.0, 2.0, 100.0, properties, "UTC")


def test_a_charger_must_share_a_connector_and_have_the_power_asked_for():
    ccs = place(connectors=["type2_combo"], power_kw=150)
    slow = place(connectors=["type2"], power_kw=11)
    unknown = place()
    assert compatible(ccs, {"ccs"}, 50)  # OSM's type2_combo is CCS
    assert not compatible(slow, {"ccs"}, 0)
    assert compatible(slow, {"type2"}, 0) and not compatible(slow, {"type2"}, 22)
    assert not compatible(unknown, {"type2"}, 0)  # it may not fit: not sent there
    assert compatible(unknown, set(), 0)


def test_the_battery_need_is_distance_over_range():
    facts = {"product": {"attributes": {"range_km": 200}, "telemetry": {"battery_pct": 30}},
             "trip": {"distance_m": 90_000}}
    battery, needed, km = battery_need(facts, SimpleNamespace(fields={}))
    assert (battery, needed, km) == (30, 45, 90)
    assert battery_need({"product": {"attributes": {"range_km": 200}}}, SimpleNamespace(fields={})) is None


def test_the_eta_is_the_trigger_time_plus_the_event_eta():
    trigger = SimpleNamespace(at=NOW, fields={"eta_s": 300})
    assert eta({"trip": {"eta_s": 900}}, trigger) == NOW + timedelta(seconds=300)
    assert eta({"trip": {"eta_s": 900}}, SimpleNamespace(at=NOW, fields={})) == NOW + timedelta(seconds=900)


def test_a_trip_is_keyed_by_its_id_else_its_destination():
    assert trip_key({"trip": {"id": "t-1"}}, SimpleNamespace(fields={})) == "t-1"
    assert trip_key({"trip": {"destination": {"lat": 48.85, "lon": 2.35}}}, SimpleNamespace(fields={})) \
        == "48.8500,2.3500"


def test_distances_read_as_a_driver_reads_them():
    assert distance_text(43) == "40 m" and distance_text(1234) == "1.2 km" and distance_text(4) == "4 m"


def test_a_place_is_open_or_closed_by_its_hours_in_its_own_zone():
    paris = "Europe/Paris"
    tuesday_9 = datetime(2025, 6, 3, 9, 0, tzinfo=ZoneInfo(paris))
    state = opening_state("Mo-Fr 08:00-18:00", paris, tuesday_9)
    assert state["open_now"] is True and state["next_change"].startswith("2025-06-03T18:00:00+02:00")
    closed = opening_state("Mo-Fr 08:00-18:00", paris, tuesday_9.replace(hour=19))
    assert closed["open_now"] is False and closed["next_change"].startswith("2025-06-04T08:00:00+02:00")
    assert opening_state(None, paris, tuesday_9) == {"open_now": None, "next_change": None}


def schedule_rule(at: str, weekdays=None) -> ActiveRule:
    trigger = {"event": "schedule", "at": at, **({"weekdays": weekdays} if weekdays else {})}
    return ActiveRule(uuid.uuid4(), "daily check", trigger, {"all": []}, {"recipe": "message"}, 0, 0)


def test_a_schedule_is_due_once_the_local_time_is_reached_that_local_day():
    rule = schedule_rule("09:30")
    # 08:00 UTC is 10:00 in Berlin (due), 04:00 in New York (not yet), 17:00 in Tokyo (due).
    berlin = due_slot(rule, "Europe/Berlin", NOW)
    assert berlin is not None and berlin.local_date.isoformat() == "2025-06-03"
    assert berlin.at == datetime(2025, 6, 3, 7, 30, tzinfo=timezone.utc)
    assert due_slot(rule, "America/New_York", NOW) is None
    assert due_slot(rule, "Asia/Tokyo", NOW).at == datetime(2025, 6, 3, 0, 30, tzinfo=timezone.utc)


def test_a_schedule_keeps_its_weekdays_in_the_users_zone():
    # 23:30 UTC on Monday is already Tuesday in Tokyo.
    monday_night = datetime(2025, 6, 2, 23, 30, tzinfo=timezone.utc)
    assert due_slot(schedule_rule("08:00", [2]), "Asia/Tokyo", monday_night) is not None
    assert due_slot(schedule_rule("08:00", [1]), "Asia/Tokyo", monday_night) is None
