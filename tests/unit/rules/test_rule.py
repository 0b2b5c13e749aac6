"""Whole rules: SUGGESTIONS.md's example validates and evaluates; every field is checked; defaults are filled."""

from __future__ import annotations

import copy

import pytest

from smartsvc.http.products import CONNECTORS
from smartsvc.models import PRODUCT_KINDS, TelemetryReading
from smartsvc.rules import evaluate, normalize_rule, validate_rule
from smartsvc.rules import facts as catalogue
from smartsvc.rules.limits import MAX_ISSUES, MAX_RULE_BYTES
from smartsvc.rules.rule import rule_bytes
from tests.support.rules import SMALL_SPOTS, example_rule


def test_the_example_rule_of_suggestions_md_validates():
    assert validate_rule(SMALL_SPOTS) == []


def test_the_example_rule_matches_a_smart_fortwo_and_says_why():
    fortwo = {"product": {"kind": "car", "attributes": {"length_m": 2.69}}, "trip": {"distance_m": 1400}}

    assert evaluate(SMALL_SPOTS["conditions"], fortwo) == (True, {"product.attributes.length_m": 2.69})


def test_the_example_rule_does_not_match_a_long_car():
    assert evaluate(SMALL_SPOTS["conditions"], {"product.attributes.length_m": 4.5}) == (False, {})


def test_a_minimal_rule_gets_every_default():
    rule = {"name": "  hello  ", "trigger": {"event": "schedule", "at": "09:00"},
            "action": {"recipe": "service_due"}}

    assert validate_rule(rule) == []
    assert normalize_rule(rule) == {
        "name": "hello", "trigger": {"event": "schedule", "at": "09:00"}, "conditions": {"all": []},
        "action": {"recipe": "service_due",
                   "params": {"within_days": 14, "within_km": 1000, "radius_m": 10000, "limit": 3}},
        "priority": 0, "cooldown_s": 3600, "enabled": True,
    }


def test_normalizing_copies_so_the_input_is_not_shared():
    rule = example_rule()

    stored = normalize_rule(rule)
    stored["conditions"]["all"].clear()

    assert rule["conditions"]["all"]


@pytest.mark.parametrize(("rule", "path", "message"), [
    ([], "body", "must be a JSON object"),
    ({**SMALL_SPOTS, "cooldown": 60}, "cooldown", "unknown field; a rule has name, trigger"),
    ({k: v for k, v in SMALL_SPOTS.items() if k != "name"}, "name", "is required"),
    ({k: v for k, v in SMALL_SPOTS.items() if k != "trigger"}, "trigger", "is required"),
    ({k: v for k, v in SMALL_SPOTS.items() if k != "action"}, "action", "is required"),
    ({**SMALL_SPOTS, "name": ""}, "name", "must be non-blank text of at most 200 characters"),
    ({**SMALL_SPOTS, "name": "x" * 201}, "name", "must be non-blank text"),
    ({**SMALL_SPOTS, "name": 5}, "name", "must be non-blank text"),
    ({**SMALL_SPOTS, "priority": 1001}, "priority", "must be an integer from -1000 to 1000"),
    ({**SMALL_SPOTS, "priority": 1.0}, "priority", "must be an integer"),
    ({**SMALL_SPOTS, "priority": True}, "priority", "must be an integer"),
    ({**SMALL_SPOTS, "cooldown_s": -1}, "cooldown_s", "must be an integer from 0 to 2592000"),
    ({**SMALL_SPOTS, "enabled": "yes"}, "enabled", "must be true or false"),
    ({**SMALL_SPOTS, "enabled": 1}, "enabled", "must be true or false"),
    ({**SMALL_SPOTS, "conditions": {"all": [{"fact": "product.atributes.length_m", "op": "<=", "value": 3}]}},
     "conditions.all.0.fact", "unknown fact 'product.atributes.length_m'"),
    ({**SMALL_SPOTS, "action": {"recipe": "spots_near_destination", "params": {"radius_m": 9000}}},
     "action.params.radius_m", "must be an integer from 50 to 5000"),
    ({**SMALL_SPOTS, "trigger": {"event": "trip.approaching", "within_km": 2}}, "trigger.within_km",
     "unknown field"),
])
def test_each_problem_of_a_rule_is_named(rule, path, message):
    problems = validate_rule(rule)

    assert any(p == path and m.startswith(message) for p, m in problems), problems


def test_event_facts_are_checked_against_the_trigger_in_conditions_and_templates():
    rule = example_rule(
        trigger={"event": "geofence.entered"},
        conditions={"all": [{"fact": "event.eta_s", "op": "<", "value": 600}]},
        action={"recipe": "message", "params": {"title": "In {event.geofence_id}", "body": "ETA {event.eta_s}"}},
    )

    assert validate_rule(rule) == [
        ("conditions.all.0.fact", "'event.eta_s' is not a field of trigger 'geofence.entered' "
                                  "(its event facts: event.geofence_id)"),
        ("action.params.body", "placeholder {event.eta_s}: 'event.eta_s' is not a field of trigger "
                               "'geofence.entered' (its event facts: event.geofence_id)"),
    ]


def test_with_an_invalid_trigger_only_the_trigger_is_reported():
    rule = example_rule(trigger={"event": "nope"},
                        conditions={"all": [{"fact": "event.eta_s", "op": "<", "value": 600}]})

    assert [path for path, _ in validate_rule(rule)] == ["trigger.event"]


def test_the_list_of_problems_is_bounded():
    rule = example_rule(conditions={"all": [{"fact": f"bad.{i}", "op": "?"} for i in range(16)]},
                        **{f"extra{i}": i for i in range(60)})

    assert len(validate_rule(rule)) == MAX_ISSUES


def test_a_rule_past_the_size_budget_is_refused_on_its_largest_part():
    big_leaf = {"fact": "product.brand", "op": "in", "value": ["b" * 190] * 50}
    rule = example_rule(conditions={"all": [big_leaf] * 4})  # about 39 KB

    problems = validate_rule(rule)

    assert len(problems) == 1 and problems[0][0] == "conditions"
    assert problems[0][1].endswith(f"at most {MAX_RULE_BYTES:,}") and "bytes as JSON" in problems[0][1]
    assert validate_rule(example_rule(conditions={"all": [big_leaf] * 3})) == []  # about 29 KB


def test_the_size_is_that_of_compact_utf8_json():
    assert rule_bytes({"name": "ignored", "trigger": {"event": "trip.started"}, "conditions": {"all": []},
                       "action": {"recipe": "message", "params": {"title": "é", "body": "b"}}}) == len(
        '{"event":"trip.started"}{"all":[]}{"recipe":"message","params":{"title":"é","body":"b"}}'.encode())


def test_validating_does_not_change_the_rule():
    rule = example_rule()
    before = copy.deepcopy(rule)

    validate_rule(rule)
    normalize_rule(rule)

    assert rule == before


def test_the_catalogue_vocabularies_are_the_apis():
    """The language keeps its own copies (it imports neither Flask nor the database); they must agree."""
    assert catalogue.CONNECTORS == CONNECTORS
    assert catalogue.PRODUCT_KINDS == PRODUCT_KINDS
    assert catalogue.TELEMETRY_MEASUREMENTS == TelemetryReading.MEASUREMENTS


def test_an_event_fact_means_the_same_for_every_trigger_that_has_it():
    seen: dict = {}
    for facts in catalogue.EVENT_FACTS.values():
        for name, fact in facts.items():
            assert seen.setdefault(name, fact) == fact, name
    assert set(catalogue.EVENT_FACTS) == set(__import__("smartsvc.rules.triggers", fromlist=["x"]).TRIGGERS)
