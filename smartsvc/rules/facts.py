"""The facts rules may test, by namespace, and how a fact's value is found in a context.

A fact has a *kind* that decides which operators and operands make sense
(see :mod:`smartsvc.rules.ops`):

- ``number`` (optionally an integer within bounds), ``string`` (optionally one
  of an enumeration), ``time`` (local ``HH:MM``);
- ``string_list`` / ``number_list`` (e.g. a model's connectors);
- ``datetime`` and ``location``: only whether they exist;
- ``any``: ``geofence.metadata.*``, whatever the operator stored on the fence,
  so its operands are checked for shape only.

``event.*`` facts are the trigger's own fields and differ per trigger event:
:data:`EVENT_FACTS`.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, Mapping

from .limits import MAX_FACT_LENGTH, MAX_METADATA_KEY_LENGTH, MAX_METADATA_KEYS

NUMBER, STRING, TIME, STRING_LIST, NUMBER_LIST, DATETIME, LOCATION, ANY = (
    "number", "string", "time", "string_list", "number_list", "datetime", "location", "any")

# The catalogue's vocabularies. Kept here (not imported from the HTTP or database
# layers) so that the language stays importable anywhere; a unit test keeps them equal.
PRODUCT_KINDS = ("car", "van", "motorcycle", "scooter", "bicycle", "other")
POWERTRAINS = ("bev", "phev", "ice")
CONNECTORS = ("type1", "type2", "ccs", "ccs1", "ccs2", "chademo", "nacs", "gbt", "schuko")
TELEMETRY_MEASUREMENTS = ("odometer_km", "battery_pct", "fuel_pct", "service_due_at", "tire_pressure_bar")
# Telemetry a threshold trigger can watch, with the range its value lives in.
THRESHOLD_FACTS = {
    "product.telemetry.battery_pct": (0.0, 100.0),
    "product.telemetry.fuel_pct": (0.0, 100.0),
    "product.telemetry.odometer_km": (0.0, 10_000_000.0),
}


@dataclass(frozen=True)
class Fact:
    """One fact: its kind and what its values may be."""

    kind: str
    description: str
    enum: tuple[str, ...] = ()
    integer: bool = False
    minimum: float | None = None
    maximum: float | None = None


FACTS: dict[str, Fact] = {
    "user.time_zone": Fact(STRING, "The user's IANA time zone, e.g. Europe/Berlin"),
    "user.local_time": Fact(TIME, "The user's local time, HH:MM"),
    "user.weekday": Fact(NUMBER, "The user's local weekday, 1 (Monday) to 7 (Sunday)", integer=True,
                         minimum=1, maximum=7),
    "product.kind": Fact(STRING, "The product's kind", enum=PRODUCT_KINDS),
    "product.brand": Fact(STRING, "The product model's brand"),
    "product.name": Fact(STRING, "The product model's name"),
    "product.attributes.length_m": Fact(NUMBER, "Length in metres"),
    "product.attributes.width_m": Fact(NUMBER, "Width in metres"),
    "product.attributes.height_m": Fact(NUMBER, "Height in metres"),
    "product.attributes.weight_kg": Fact(NUMBER, "Weight in kilograms"),
    "product.attributes.powertrain": Fact(STRING, "bev, phev or ice", enum=POWERTRAINS),
    "product.attributes.connectors": Fact(STRING_LIST, "Charging connectors", enum=CONNECTORS),
    "product.attributes.battery_kwh": Fact(NUMBER, "Battery capacity in kWh"),
    "product.attributes.range_km": Fact(NUMBER, "Range on a full battery or tank, km"),
    "product.attributes.service_interval_km": Fact(NUMBER, "Kilometres between services"),
    "product.telemetry.odometer_km": Fact(NUMBER, "Latest odometer reading, km"),
    "product.telemetry.battery_pct": Fact(NUMBER, "Latest battery level, %"),
    "product.telemetry.fuel_pct": Fact(NUMBER, "Latest fuel level, %"),
    "product.telemetry.service_due_at": Fact(DATETIME, "When the next service is due (RFC 3339)"),
    "product.telemetry.tire_pressure_bar": Fact(NUMBER_LIST, "Latest tyre pressures, bar"),
    "trip.distance_m": Fact(NUMBER, "Distance to the active trip's destination, metres"),
    "trip.eta_s": Fact(NUMBER, "Estimated seconds to the destination, from recent speed"),
    "trip.destination": Fact(LOCATION, "The active trip's destination {lat, lon}"),
    "trip.mode": Fact(STRING, "The active trip's mode, as the app reported it"),
    "geofence.tag": Fact(STRING, "The tag of the geofence the trigger is about"),
}

# The trigger's own fields, per trigger event (``event.<field>``).
_GEOFENCE_ID = Fact(STRING, "The geofence's id")
_DISTANCE = Fact(NUMBER, "Distance to the trip's destination when the event happened, metres")
_PRODUCT_ID = Fact(STRING, "The product the telemetry is about")
EVENT_FACTS: dict[str, dict[str, Fact]] = {
    "geofence.entered": {"event.geofence_id": _GEOFENCE_ID},
    "geofence.exited": {"event.geofence_id": _GEOFENCE_ID,
                        "event.inside_s": Fact(NUMBER, "How long the user had been inside, seconds")},
    "geofence.dwelled": {"event.geofence_id": _GEOFENCE_ID,
                         "event.dwell_s": Fact(NUMBER, "How long the user has been inside, seconds")},
    "trip.started": {"event.distance_m": _DISTANCE},
    "trip.approaching": {"event.distance_m": _DISTANCE,
                         "event.eta_s": Fact(NUMBER, "Estimated seconds to the destination")},
    "trip.arrived": {"event.distance_m": _DISTANCE},
    "telemetry.updated": {"event.product_id": _PRODUCT_ID,
                          "event.fields": Fact(STRING_LIST, "The measurements the reading carried",
                                               enum=TELEMETRY_MEASUREMENTS)},
    "telemetry.threshold": {"event.product_id": _PRODUCT_ID,
                            "event.fact": Fact(STRING, "The telemetry fact that crossed the threshold",
                                               enum=tuple(THRESHOLD_FACTS)),
                            "event.value": Fact(NUMBER, "Its new value"),
                            "event.previous_value": Fact(NUMBER, "Its value before")},
    "schedule": {"event.at": Fact(TIME, "The scheduled local time, HH:MM")},
}

METADATA_PREFIX = "geofence.metadata."
METADATA_KEY_PATTERN = rf"[A-Za-z0-9_-]{{1,{MAX_METADATA_KEY_LENGTH}}}"
# Any key of the geofence's metadata, nested objects walked by further keys.
METADATA_FACT_PATTERN = (rf"geofence\.metadata\.{METADATA_KEY_PATTERN}"
                         rf"(\.{METADATA_KEY_PATTERN}){{0,{MAX_METADATA_KEYS - 1}}}")
_METADATA_FACT = re.compile(METADATA_FACT_PATTERN)
METADATA_FACT = Fact(ANY, "A value of the geofence's metadata (any key)")
NAMESPACES = ("user", "product", "trip", "geofence", "event")


def all_event_facts() -> dict[str, Fact]:
    """Every ``event.*`` fact of any trigger (a name means the same thing for every trigger that has it)."""
    merged: dict[str, Fact] = {}
    for facts in EVENT_FACTS.values():
        merged.update(facts)
    return merged


def fact_for(name: str, event: str | None) -> Fact | None:
    """The fact ``name`` means for a rule triggered by ``event``, or None when it is unknown there.

    With ``event`` None (the trigger is itself invalid) any trigger's event fact is known,
    so that only the trigger is reported.
    """
    if name in FACTS:
        return FACTS[name]
    if _METADATA_FACT.fullmatch(name):
        return METADATA_FACT
    if event is None:
        return all_event_facts().get(name)
    return EVENT_FACTS.get(event, {}).get(name)


def unknown_fact_message(name: str, event: str | None) -> str:
    """Why ``name`` is not a fact, with the nearest known name when there is a close one."""
    shown = name if len(name) <= MAX_FACT_LENGTH else name[:MAX_FACT_LENGTH] + "…"
    if event is not None and name in all_event_facts():
        provided = ", ".join(sorted(EVENT_FACTS.get(event, {}))) or "none"
        return f"'{shown}' is not a field of trigger '{event}' (its event facts: {provided})"
    if name.startswith(METADATA_PREFIX):
        return (f"'{shown}' is not a metadata fact: use geofence.metadata.<key>, keys of letters, digits, "
                f"'_' or '-' (at most {MAX_METADATA_KEYS} keys of {MAX_METADATA_KEY_LENGTH} characters)")
    candidates = [*FACTS, *(EVENT_FACTS.get(event, {}) if event else all_event_facts())]
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.8)
    hint = f"; did you mean '{close[0]}'?" if close else f"; facts are in namespaces {', '.join(NAMESPACES)}"
    return f"unknown fact '{shown}'{hint}"


MISSING: Any = None


def lookup(facts: Mapping[str, Any], name: str) -> Any:
    """The value of fact ``name`` in a context, or None when the context does not have it.

    ``facts`` may be flat (``{"product.attributes.length_m": 2.69}``), nested
    (``{"product": {"attributes": {"length_m": 2.69}}}``) or both; a flat
    name wins. JSON null counts as missing.
    """
    if name in facts:
        return facts[name]
    node: Any = facts
    for part in name.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return MISSING
        node = node[part]
    return node
