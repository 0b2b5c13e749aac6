"""Triggers and actions: their fields are checked, named by path, and filled with defaults."""

from __future__ import annotations

import pytest

from smartsvc.rules.recipes import RECIPES, check_action, normalize_action
from smartsvc.rules.triggers import TRIGGER_EVENTS, check_trigger, normalize_trigger


@pytest.mark.parametrize("trigger", [
    {"event": "geofence.entered"},
    {"event": "geofence.exited", "tag": "city-centre"},
    {"event": "geofence.dwelled", "tag": "parking garage"},
    {"event": "trip.started"},
    {"event": "trip.approaching", "within_m": 1500},
    {"event": "trip.approaching", "within_s": 600},
    {"event": "trip.approaching", "within_m": 50, "within_s": 86400},
    {"event": "trip.arrived"},
    {"event": "telemetry.updated"},
    {"event": "telemetry.threshold", "fact": "product.telemetry.battery_pct", "op": "<", "value": 20},
    {"event": "telemetry.threshold", "fact": "product.telemetry.odometer_km", "op": ">=", "value": 150000.5},
    {"event": "schedule", "at": "09:00"},
    {"event": "schedule", "at": "23:59", "weekdays": [1, 2, 3, 4, 5]},
])
def test_valid_triggers_give_their_event(trigger):
    assert check_trigger(trigger) == (trigger["event"], [])


def test_every_trigger_event_has_a_valid_example_above():
    assert set(TRIGGER_EVENTS) == {
        "geofence.entered", "geofence.exited", "geofence.dwelled", "trip.started", "trip.approaching",
        "trip.arrived", "telemetry.updated", "telemetry.threshold", "schedule"}


@pytest.mark.parametrize(("trigger", "path", "message"), [
    ("trip.approaching", "trigger", "must be an object"),
    ({}, "trigger.event", "is required: one of geofence.entered"),
    ({"event": "trip.approached"}, "trigger.event", "unknown trigger event 'trip.approached'"),
    ({"event": 7}, "trigger.event", "unknown trigger event 7"),
    ({"event": "trip.approaching"}, "trigger", "give within_m and/or within_s"),
    ({"event": "trip.approaching", "within_m": 10}, "trigger.within_m", "must be a number from 50 to 100000"),
    ({"event": "trip.approaching", "within_m": "1500"}, "trigger.within_m", "must be a number"),
    ({"event": "trip.approaching", "within_s": 60.5}, "trigger.within_s", "must be an integer from 30 to 86400"),
    ({"event": "trip.started", "within_m": 1500}, "trigger.within_m",
     "unknown field for trigger 'trip.started'; it has event"),
    ({"event": "geofence.entered", "tags": "x"}, "trigger.tags",
     "unknown field for trigger 'geofence.entered'; it has event, tag"),
    ({"event": "geofence.entered", "tag": "   "}, "trigger.tag", "must be non-blank text of at most 100"),
    ({"event": "geofence.entered", "tag": "x" * 101}, "trigger.tag", "must be non-blank text of at most 100"),
    ({"event": "telemetry.threshold", "op": "<", "value": 20}, "trigger.fact", "is required"),
    ({"event": "telemetry.threshold", "fact": "product.telemetry.tire_pressure_bar", "op": "<", "value": 2},
     "trigger.fact", "must be one of product.telemetry.battery_pct"),
    ({"event": "telemetry.threshold", "fact": "product.telemetry.battery_pct", "op": "==", "value": 2},
     "trigger.op", "must be one of <, <=, >, >="),
    ({"event": "telemetry.threshold", "fact": "product.telemetry.battery_pct", "op": "<", "value": 120},
     "trigger.value", "must be from 0 to 100 for product.telemetry.battery_pct"),
    ({"event": "telemetry.threshold", "fact": "product.telemetry.battery_pct", "op": "<"}, "trigger.value",
     "is required"),
    ({"event": "schedule"}, "trigger.at", "is required"),
    ({"event": "schedule", "at": "9:00"}, "trigger.at", "must be a local time HH:MM"),
    ({"event": "schedule", "at": "09:00", "weekdays": [1, 1]}, "trigger.weekdays", "must be a list of distinct"),
    ({"event": "schedule", "at": "09:00", "weekdays": [0]}, "trigger.weekdays", "must be a list of distinct"),
    ({"event": "schedule", "at": "09:00", "weekdays": []}, "trigger.weekdays", "must be a list of distinct"),
    ({"event": "schedule", "at": "09:00", "weekdays": [[1]]}, "trigger.weekdays", "must be a list of distinct"),
])
def test_each_trigger_problem_is_named(trigger, path, message):
    _event, problems = check_trigger(trigger)

    assert any(p == path and m.startswith(message) for p, m in problems), problems


def test_a_threshold_value_out_of_every_range_is_reported_once():
    trigger = {"event": "telemetry.threshold", "fact": "product.telemetry.battery_pct", "op": "<", "value": 1e9}

    assert check_trigger(trigger)[1] == [("trigger.value", "must be a number from 0 to 1e+07")]


def test_a_trigger_is_stored_with_event_first():
    assert list(normalize_trigger({"within_s": 600, "event": "trip.approaching", "within_m": 800})) == [
        "event", "within_m", "within_s"]


@pytest.mark.parametrize("action", [
    {"recipe": "spots_near_destination"},
    {"recipe": "spots_near_destination", "params": {"radius_m": 5000, "limit": 20, "duration_min": 60}},
    {"recipe": "charger_on_route", "params": {"reserve_pct": 20}},
    {"recipe": "service_due", "params": {"within_days": 30, "within_km": 1500}},
    {"recipe": "message", "params": {"title": "Battery at {product.telemetry.battery_pct} %",
                                     "body": "Near {geofence.metadata.name}: charge before {trip.eta_s} s pass"}},
])
def test_valid_actions_have_no_problems(action):
    assert check_action(action, "telemetry.threshold") == []


@pytest.mark.parametrize(("action", "path", "message"), [
    (["spots"], "action", "must be an object"),
    ({}, "action.recipe", "is required: one of spots_near_destination"),
    ({"recipe": "spots"}, "action.recipe", "unknown recipe 'spots'"),
    ({"recipe": "spots_near_destination", "param": {}}, "action.param", "unknown field"),
    ({"recipe": "spots_near_destination", "params": []}, "action.params", "must be an object"),
    ({"recipe": "spots_near_destination", "params": {"radius_m": 5001}}, "action.params.radius_m",
     "must be an integer from 50 to 5000"),
    ({"recipe": "spots_near_destination", "params": {"limit": 21}}, "action.params.limit",
     "must be an integer from 1 to 20"),
    ({"recipe": "spots_near_destination", "params": {"limit": 5.0}}, "action.params.limit", "must be an integer"),
    ({"recipe": "spots_near_destination", "params": {"radius": 400}}, "action.params.radius",
     "unknown field for recipe 'spots_near_destination'; it has radius_m, limit, duration_min"),
    ({"recipe": "service_due", "params": {"within_days": 0}}, "action.params.within_days",
     "must be an integer from 1 to 365"),
    ({"recipe": "charger_on_route", "params": {"reserve_pct": 60}}, "action.params.reserve_pct",
     "must be a number from 0 to 50"),
    ({"recipe": "message"}, "action.params", "is required for recipe 'message'"),
    ({"recipe": "message", "params": {"title": "Hi"}}, "action.params.body", "is required"),
    ({"recipe": "message", "params": {"title": " ", "body": "b"}}, "action.params.title",
     "must be non-blank text of at most 100 characters"),
    ({"recipe": "message", "params": {"title": "x" * 101, "body": "b"}}, "action.params.title",
     "must be non-blank text of at most 100 characters"),
    ({"recipe": "message", "params": {"title": "Hi {user.nmae}", "body": "b"}}, "action.params.title",
     "placeholder {user.nmae}: unknown fact 'user.nmae'"),
    ({"recipe": "message", "params": {"title": "t", "body": "at {event.dwell_s}"}}, "action.params.body",
     "placeholder {event.dwell_s}: 'event.dwell_s' is not a field of trigger 'telemetry.threshold'"),
    ({"recipe": "message", "params": {"title": "t", "body": "to {trip.destination}"}}, "action.params.body",
     "placeholder {trip.destination}: a location cannot be shown as text"),
    ({"recipe": "message", "params": {"title": "t", "body": "{}"}}, "action.params.body",
     "placeholder {}: unknown fact ''"),
    ({"recipe": "message", "params": {"title": "t", "body": "a { b"}}, "action.params.body",
     "braces are only for {fact} placeholders"),
    ({"recipe": "message", "params": {"title": "t", "body": "{{user.weekday}}"}}, "action.params.body",
     "braces are only for {fact} placeholders"),
])
def test_each_action_problem_is_named(action, path, message):
    problems = check_action(action, "telemetry.threshold")

    assert any(p == path and m.startswith(message) for p, m in problems), problems


def test_left_out_parameters_take_their_defaults():
    assert normalize_action({"recipe": "spots_near_destination", "params": {"limit": 3}}) == {
        "recipe": "spots_near_destination", "params": {"radius_m": 400, "limit": 3, "duration_min": 60}}
    assert normalize_action({"recipe": "charger_on_route"})["params"] == {
        "radius_m": 2000, "limit": 3, "reserve_pct": 15, "min_power_kw": 0}
    message = {"recipe": "message", "params": {"body": "b", "title": "t"}}
    assert normalize_action(message) == {"recipe": "message", "params": {"title": "t", "body": "b"}}


def test_the_spot_recipe_keeps_the_spot_search_limits():
    params = RECIPES["spots_near_destination"].params

    assert params["radius_m"].maximum == 5000 and params["limit"].maximum == 20
