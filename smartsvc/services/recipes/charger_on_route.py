"""``charger_on_route``: the nearest compatible chargers when the battery will not last the trip.

Only for an electric product (``product.attributes.powertrain`` ``bev`` or
``phev``). The battery lasts when ``battery_pct - need >= reserve_pct``, with
``need = distance_km / range_km × 100`` (``product.telemetry.battery_pct``,
``product.attributes.range_km``, ``trip.distance_m`` — or the trigger's
``distance_m``); any of them unknown → nothing is said.

Chargers are ``charger`` features of the live ``parking`` layer and chargers
(kind or ``category`` ``charger``) of the live ``pois`` layer within
``radius_m`` of the straight line from the user's position to the
destination (the route itself is not known; without a position, around the
destination), nearest to the user first. Compatible: at least one connector
in common with the product's ``connectors`` (a charger that lists none is
left out, as it may not fit; a product that lists none accepts any), and a
``power_kw`` of at least ``min_power_kw`` (unknown power passes only when
``min_power_kw`` is 0).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Iterable, Mapping

from sqlalchemy.orm import Session

from ...rules.facts import lookup
from ..proposals import RecipeResult
from .context import destination, distance_text, eta, number, product_label, trip_key, user_position
from .places import Place, find_places

ELECTRIC = ("bev", "phev")
# Connector names as data sources spell them (OSM socket:*) → the catalogue's names they are.
_ALIASES = {
    "type2_combo": {"ccs", "ccs2"}, "type1_combo": {"ccs", "ccs1"},
    "ccs": {"ccs", "ccs1", "ccs2"}, "ccs1": {"ccs", "ccs1"}, "ccs2": {"ccs", "ccs2"},
    "tesla_supercharger": {"nacs"}, "tesla_supercharger_ccs": {"ccs", "ccs2"}, "nacs": {"nacs"},
    "type2_cable": {"type2"}, "chademo": {"chademo"}, "gb_dc": {"gbt"}, "gb_ac": {"gbt"},
}


def _names(connectors: Iterable[Any]) -> set[str]:
    out: set[str] = set()
    for connector in connectors:
        if isinstance(connector, str):
            name = connector.strip().lower()
            out |= _ALIASES.get(name, {name})
    return out


def compatible(place: Place, product_connectors: set[str], min_power_kw: float) -> bool:
    """Whether the product can charge at ``place`` with at least ``min_power_kw``."""
    if product_connectors and not (_names(place.connectors) & product_connectors):
        return False
    power = place.power_kw
    return power >= min_power_kw if power is not None else min_power_kw <= 0


def battery_need(facts: Mapping[str, Any], trigger: Any) -> tuple[float, float, float] | None:
    """``(battery_pct, needed_pct, distance_km)``; None when one of them is not known."""
    battery = number(facts, "product.telemetry.battery_pct")
    range_km = number(facts, "product.attributes.range_km")
    distance_m = number(facts, "trip.distance_m")
    if distance_m is None:
        distance_m = number(trigger.fields or {}, "distance_m")
    if battery is None or range_km is None or range_km <= 0 or distance_m is None or distance_m < 0:
        return None
    distance_km = distance_m / 1000
    return battery, distance_km / range_km * 100, distance_km


def run(session: Session, container: Any, params: Mapping[str, Any], facts: Mapping[str, Any],
        trigger: Any) -> RecipeResult | None:
    """The nearest compatible chargers when the battery will not last; None when it will, or there are none."""
    if lookup(facts, "product.attributes.powertrain") not in ELECTRIC:
        return None
    need = battery_need(facts, trigger)
    where = destination(facts)
    if need is None or where is None:
        return None
    battery, needed, distance_km = need
    reserve = float(params["reserve_pct"])
    if battery - needed >= reserve:
        return None
    here = user_position(facts)
    origin, route_to = (here, where) if here is not None else (where, None)
    product_connectors = _names(lookup(facts, "product.attributes.connectors") or ())
    min_power = float(params["min_power_kw"])
    chargers = [place for place in find_places(session, ("parking", "pois"), origin, float(params["radius_m"]),
                                               kinds=("charger",), categories=("charger",), route_to=route_to)
                if compatible(place, product_connectors, min_power)][: int(params["limit"])]
    if not chargers:
        return None
    key = trip_key(facts, trigger)
    arrival = eta(facts, trigger)
    return RecipeResult(
        title=f"Charge on the way: your {product_label(facts, 'car')}'s battery will not last the trip",
        body=_body(battery, needed, distance_km, reserve, chargers[0], here is not None),
        payload={
            "battery_pct": battery, "needed_pct": round(needed, 1), "reserve_pct": reserve,
            "distance_km": round(distance_km, 1), "destination": {"lat": where[0], "lon": where[1]},
            "chargers": [_charger(place, route_to is not None) for place in chargers],
        },
        collapse_key=f"charger:{key}" if key else None,
        expires_at=arrival + timedelta(minutes=30),
    )


def _charger(place: Place, on_route: bool) -> dict[str, Any]:
    item = place.summary()
    item["connectors"] = list(place.connectors)
    item["power_kw"] = place.power_kw
    if on_route:
        item["off_route_m"] = round(place.off_route_m, 1)
    return item


def _body(battery: float, needed: float, distance_km: float, reserve: float, nearest: Place,
          from_user: bool) -> str:
    name = nearest.properties.get("name") or nearest.properties.get("operator") or "a charger"
    power = f", {nearest.power_kw:g} kW" if nearest.power_kw is not None else ""
    sockets = f" ({', '.join(nearest.connectors)})" if nearest.connectors else ""
    where = f"{distance_text(nearest.distance_m)} {'from you' if from_user else 'from your destination'}"
    return (f"The {distance_km:.0f} km left need about {needed:.0f} % of your battery and you have {battery:.0f} % "
            f"(keeping {reserve:g} % in reserve). Nearest charger: {name}, {where}{power}{sockets}.")
