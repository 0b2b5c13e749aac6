"""Reading what recipes need from the facts and the trigger, the same way in every recipe.

The facts are :func:`smartsvc.services.context_facts.context_facts`' nested
dict plus the engine's ``geofence`` and ``event`` namespaces; missing facts
are None (a recipe that lacks what it needs finds nothing, it does not fail).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from smartsvc.rules.facts import lookup
from smartsvc.rules.values import is_number


def number(facts: Mapping[str, Any], name: str) -> float | None:
    """A numeric fact, or None when it is missing or not a finite number."""
    value = lookup(facts, name)
    return float(value) if is_number(value) else None


def point(value: Any) -> tuple[float, float] | None:
    """``(lat, lon)`` from a ``{"lat", "lon"}`` object, or None."""
    if not isinstance(value, Mapping):
        return None
    lat, lon = value.get("lat"), value.get("lon")
    if not (is_number(lat) and is_number(lon)) or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return float(lat), float(lon)


def destination(facts: Mapping[str, Any]) -> tuple[float, float] | None:
    """The active trip's destination."""
    return point(lookup(facts, "trip.destination"))


def user_position(facts: Mapping[str, Any]) -> tuple[float, float] | None:
    """The user's last known position (``user.location``, or ``user.last_location``), or None."""
    for name in ("user.location", "user.last_location", "user.position"):
        found = point(lookup(facts, name))
        if found is not None:
            return found
    return None


def product_label(facts: Mapping[str, Any], fallback: str = "your vehicle") -> str:
    """What the driver calls their product: "smart fortwo", else ``fallback``."""
    values = (lookup(facts, "product.brand"), lookup(facts, "product.name"))
    parts = [value.strip() for value in values if isinstance(value, str) and value.strip()]
    return " ".join(parts) if parts else fallback


def trip_key(facts: Mapping[str, Any], trigger: Any) -> str | None:
    """What names the trip in collapse keys: its id when known, else its destination (rounded to ~10 m)."""
    fields = getattr(trigger, "fields", None) or {}
    for value in (fields.get("trip_id"), lookup(facts, "trip.id"), lookup(facts, "trip.trip_id")):
        if isinstance(value, str) and value:
            return value
    where = destination(facts)
    return None if where is None else f"{where[0]:.4f},{where[1]:.4f}"


def trigger_time(trigger: Any) -> datetime:
    """When the trigger's situation happened, in UTC."""
    at = trigger.at
    return at.astimezone(timezone.utc) if at.tzinfo is not None else at.replace(tzinfo=timezone.utc)


def eta(facts: Mapping[str, Any], trigger: Any) -> datetime:
    """When the user will reach the destination: the trigger's time plus its ETA (``event.eta_s``, else
    ``trip.eta_s``; none known: the trigger's time)."""
    fields = getattr(trigger, "fields", None) or {}
    seconds = fields.get("eta_s")
    if not is_number(seconds) or seconds < 0:
        seconds = number(facts, "trip.eta_s")
    start = trigger_time(trigger)
    if seconds is None or seconds < 0:
        return start.replace(microsecond=0)
    return (start + timedelta(seconds=min(seconds, 7 * 24 * 3600))).replace(microsecond=0)


def distance_text(metres: float) -> str:
    """Metres as a driver reads them: "40 m", "1.2 km"."""
    if metres < 1000:
        return f"{max(round(metres / 10) * 10, 0):.0f} m" if metres >= 10 else f"{metres:.0f} m"
    return f"{metres / 1000:.1f} km"
