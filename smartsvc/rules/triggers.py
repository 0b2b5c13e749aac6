"""The triggers a rule can wait for (SUGGESTIONS.md "Triggers the engine derives") and their fields.

- ``geofence.entered`` / ``geofence.exited`` / ``geofence.dwelled``: optional
  ``tag`` (only fences with this tag);
- ``trip.started``, ``trip.arrived``;
- ``trip.approaching``: ``within_m`` and/or ``within_s`` (ETA) of the
  destination — fires once per trip when the first of them is reached;
- ``telemetry.updated``: any reading of a product;
- ``telemetry.threshold``: ``fact`` (battery, fuel or odometer) ``op``
  (``<``, ``<=``, ``>``, ``>=``) ``value``: fires when a reading makes it
  true and the previous one did not;
- ``schedule``: daily at ``at`` (``HH:MM``) in each user's own time zone,
  optionally only on ``weekdays`` (1 = Monday … 7 = Sunday).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .facts import THRESHOLD_FACTS
from .limits import MAX_TAG_LENGTH
from .ops import ORDERING
from .params import CHOICE, INTEGER, NUMBER, TEXT, TIME, WEEKDAYS, Param, check_fields, with_defaults
from .values import is_number, shown


@dataclass(frozen=True)
class Trigger:
    """One trigger event: its fields and, when some are alternatives, which (at least one) must be given."""

    description: str
    fields: dict[str, Param] = field(default_factory=dict)
    one_of: tuple[str, ...] = ()


_TAG = Param(TEXT, "Only geofences with this tag", max_length=MAX_TAG_LENGTH)
WITHIN_M = (50.0, 100_000.0)
WITHIN_S = (30, 24 * 3600)
_THRESHOLD_SPAN = (min(low for low, _ in THRESHOLD_FACTS.values()), max(high for _, high in THRESHOLD_FACTS.values()))

TRIGGERS: dict[str, Trigger] = {
    "geofence.entered": Trigger("The user entered a geofence", {"tag": _TAG}),
    "geofence.exited": Trigger("The user left a geofence", {"tag": _TAG}),
    "geofence.dwelled": Trigger("The user has stayed in a geofence for its dwell_s", {"tag": _TAG}),
    "trip.started": Trigger("The user started a trip"),
    "trip.approaching": Trigger(
        "The active trip came within a distance or a time (ETA) of its destination",
        {"within_m": Param(NUMBER, "Metres to the destination", *WITHIN_M),
         "within_s": Param(INTEGER, "Seconds (ETA) to the destination", *WITHIN_S)},
        one_of=("within_m", "within_s"),
    ),
    "trip.arrived": Trigger("The user arrived at the trip's destination"),
    "telemetry.updated": Trigger("A product reported telemetry"),
    "telemetry.threshold": Trigger(
        "A product's telemetry crossed a threshold (the condition became true with this reading)",
        {"fact": Param(CHOICE, "The telemetry fact watched", required=True, enum=tuple(THRESHOLD_FACTS)),
         "op": Param(CHOICE, "How it compares with value", required=True, enum=ORDERING),
         "value": Param(NUMBER, "The threshold (0–100 for percentages)", *_THRESHOLD_SPAN, required=True)},
    ),
    "schedule": Trigger(
        "Daily at a local time in each user's time zone (the scheduler's periodic checks)",
        {"at": Param(TIME, "Local time HH:MM", required=True),
         "weekdays": Param(WEEKDAYS, "Only on these weekdays, 1 (Monday) to 7 (Sunday); every day when left out")},
    ),
}
TRIGGER_EVENTS = tuple(TRIGGERS)


def check_trigger(trigger: Any, path: str = "trigger") -> tuple[str | None, list[tuple[str, str]]]:
    """The trigger's event (None when the trigger is unusable) and its problems."""
    if not isinstance(trigger, Mapping):
        return None, [(path, 'must be an object such as {"event": "trip.approaching", "within_m": 1500}')]
    event = trigger.get("event")
    if "event" not in trigger:
        return None, [(f"{path}.event", f"is required: one of {', '.join(TRIGGER_EVENTS)}")]
    if not isinstance(event, str) or event not in TRIGGERS:
        message = f"unknown trigger event {shown(event)}; use one of {', '.join(TRIGGER_EVENTS)}"
        return None, [(f"{path}.event", message)]
    spec = TRIGGERS[event]
    fields = {"event": Param(CHOICE, "", enum=(event,)), **spec.fields}
    issues = check_fields(trigger, fields, path, f"trigger '{event}'")
    if spec.one_of and not any(name in trigger for name in spec.one_of):
        issues.append((path, f"give {' and/or '.join(spec.one_of)}"))
    if event == "telemetry.threshold":
        issues.extend(_check_threshold_range(trigger, path))
    return event, issues


def _check_threshold_range(trigger: Mapping[str, Any], path: str) -> list[tuple[str, str]]:
    fact, value = trigger.get("fact"), trigger.get("value")
    bounds = THRESHOLD_FACTS.get(fact) if isinstance(fact, str) else None
    if bounds is None or not is_number(value) or not _THRESHOLD_SPAN[0] <= value <= _THRESHOLD_SPAN[1]:
        return []  # reported as a field problem already
    low, high = bounds
    if not low <= value <= high:
        return [(f"{path}.value", f"must be from {low:g} to {high:g} for {fact}")]
    return []


def normalize_trigger(trigger: Mapping[str, Any]) -> dict[str, Any]:
    """A valid trigger with its fields in declaration order (``event`` first)."""
    event = trigger["event"]
    return {"event": event, **with_defaults({k: v for k, v in trigger.items() if k != "event"},
                                            TRIGGERS[event].fields)}
