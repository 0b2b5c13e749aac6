"""Which rules the engine runs on a trigger: threshold crossings, geofence tags, a trigger's own rule."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

from smartsvc.services.engine import candidates, crossed, json_safe
from smartsvc.services.rule_set import ActiveRule, RuleSet


def rule(event: str, priority: int = 0, **trigger: Any) -> ActiveRule:
    return ActiveRule(id=uuid.uuid4(), name=f"{event} rule", trigger={"event": event, **trigger},
                      conditions={"all": []}, action={"recipe": "message", "params": {"title": "t", "body": "b"}},
                      priority=priority, cooldown_s=0)


def rule_set(*rules: ActiveRule) -> RuleSet:
    grouped: dict[str, list[ActiveRule]] = {}
    for item in rules:
        grouped.setdefault(item.event, []).append(item)
    return RuleSet(1, {event: tuple(items) for event, items in grouped.items()})


def trigger(event: str, fields: dict[str, Any], rule_id: uuid.UUID | None = None) -> Any:
    return SimpleNamespace(id=uuid.uuid4(), event=event, fields=fields, rule_id=rule_id,
                           at=datetime(2025, 6, 3, 8, 0, tzinfo=timezone.utc))


def battery(value: float, previous: float | None) -> dict[str, Any]:
    return {"product_id": "p", "fields": ["battery_pct"],
            "changes": {"product.telemetry.battery_pct": {"value": value, "previous_value": previous}}}


LOW = rule("telemetry.threshold", fact="product.telemetry.battery_pct", op="<", value=20)


def test_a_threshold_fires_when_the_reading_crosses_it():
    assert crossed(LOW, battery(18, 25)["changes"]) == {"fact": "product.telemetry.battery_pct", "value": 18,
                                                         "previous_value": 25}


def test_a_threshold_already_crossed_does_not_fire_again():
    assert crossed(LOW, battery(15, 18)["changes"]) is None


def test_a_reading_above_the_threshold_does_not_fire():
    assert crossed(LOW, battery(40, 18)["changes"]) is None


def test_a_first_reading_below_the_threshold_fires():
    assert crossed(LOW, battery(10, None)["changes"]) is not None


def test_a_reading_without_the_watched_measurement_does_not_fire():
    changes = {"product.telemetry.odometer_km": {"value": 100, "previous_value": 90}}
    assert crossed(LOW, changes) is None


def test_telemetry_updated_runs_its_rules_and_the_crossed_thresholds_only():
    updated = rule("telemetry.updated")
    high = rule("telemetry.threshold", fact="product.telemetry.battery_pct", op=">=", value=90)
    found = candidates(rule_set(updated, LOW, high), trigger("telemetry.updated", battery(18, 25)))
    assert {(c.rule.id, c.event) for c in found} == {(updated.id, "telemetry.updated"),
                                                     (LOW.id, "telemetry.threshold")}
    threshold = next(c for c in found if c.rule.id == LOW.id)
    assert threshold.event_facts == {"product_id": "p", "fact": "product.telemetry.battery_pct", "value": 18,
                                     "previous_value": 25}
    plain = next(c for c in found if c.rule.id == updated.id)
    assert plain.event_facts == {"product_id": "p", "fields": ["battery_pct"]}


def test_a_geofence_rule_with_a_tag_runs_only_for_fences_with_that_tag():
    dealer = rule("geofence.entered", tag="dealer")
    any_fence = rule("geofence.entered")
    fields = {"geofence_id": "f1", "tag": "home", "metadata": {"a": 1}}
    found = candidates(rule_set(dealer, any_fence), trigger("geofence.entered", fields))
    assert [c.rule.id for c in found] == [any_fence.id]
    assert found[0].event_facts == {"geofence_id": "f1"}  # tag and metadata are geofence.* facts


def test_a_trigger_for_one_rule_runs_that_rule_only():
    near, far = rule("trip.approaching", within_m=500), rule("trip.approaching", within_m=3000)
    found = candidates(rule_set(near, far), trigger("trip.approaching", {"distance_m": 2900}, rule_id=far.id))
    assert [c.rule.id for c in found] == [far.id]


def test_rules_run_highest_priority_first():
    low, high = rule("trip.started", priority=1), rule("trip.started", priority=50)
    found = candidates(rule_set(low, high), trigger("trip.started", {}))
    assert [c.rule.id for c in found] == [high.id, low.id]


def test_reasons_hold_only_json():
    moment = datetime(2025, 6, 3, 8, 0, tzinfo=timezone.utc)
    ident = uuid.uuid4()
    assert json_safe({"a": (moment, ident)}) == {"a": [moment.isoformat(), str(ident)]}
