"""``service_due``: the service is due soon → the nearest dealers and workshops, with their opening hours.

Due, the first of:
- by date: ``product.telemetry.service_due_at`` is at most ``within_days``
  after the trigger (or already past);
- by distance: the odometer (``product.telemetry.odometer_km``) is within
  ``within_km`` of the next service, which is the next multiple of
  ``product.attributes.service_interval_km`` strictly above the reading
  (services every 15,000 km: at 14,200 km the next is at 15,000, 800 km
  away; at exactly 15,000 it is the one at 30,000, as that service is taken
  to be done).

Places: ``dealer`` and ``workshop`` points of interest of the live ``pois``
layer within ``radius_m`` of the user's last position (none known: nothing
is said), nearest first, each with its opening hours and whether it is open
at the trigger's time and when that changes, read in the POI dataset's time
zone. The body names the nearest place and, unless it is open then, also the
nearest one that is. Not due, or no place: no suggestion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Mapping

from sqlalchemy.orm import Session

from ...rules.facts import lookup
from ..proposals import RecipeResult
from .context import distance_text, number, product_label, trigger_time, user_position
from .places import Place, find_places, opening_state

CATEGORIES = ("dealer", "workshop")


@dataclass(frozen=True)
class Due:
    """Why the service is due: by date (``due_at``) and/or by distance (``due_at_km``, ``remaining_km``)."""

    due_at: datetime | None = None
    due_at_km: float | None = None
    remaining_km: float | None = None

    def to_dict(self, at: datetime) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.due_at is not None:
            out.update(by="date", due_at=self.due_at.isoformat(), days_left=_days(self.due_at, at))
        if self.due_at_km is not None:
            out.setdefault("by", "km")
            out.update(due_at_km=self.due_at_km, remaining_km=self.remaining_km)
        return out


def _days(due_at: datetime, at: datetime) -> int:
    return math.floor((due_at - at).total_seconds() / 86400)


def _when(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return moment if moment.tzinfo is not None else None


def next_service_km(odometer_km: float, interval_km: float) -> float:
    """The next multiple of ``interval_km`` strictly above ``odometer_km``."""
    return (math.floor(odometer_km / interval_km) + 1) * interval_km


def due(facts: Mapping[str, Any], at: datetime, within_days: int, within_km: float) -> Due | None:
    """Whether the service is due within the limits at ``at``, and why; None when it is not."""
    due_at = _when(lookup(facts, "product.telemetry.service_due_at"))
    by_date = due_at if due_at is not None and due_at - at <= timedelta(days=within_days) else None
    odometer = number(facts, "product.telemetry.odometer_km")
    interval = number(facts, "product.attributes.service_interval_km")
    due_km = remaining = None
    if odometer is not None and odometer >= 0 and interval is not None and interval > 0:
        following = next_service_km(odometer, interval)
        if following - odometer <= within_km:
            due_km, remaining = following, round(following - odometer, 1)
    if by_date is None and due_km is None:
        return None
    return Due(by_date, due_km, remaining)


def run(session: Session, container: Any, params: Mapping[str, Any], facts: Mapping[str, Any],
        trigger: Any) -> RecipeResult | None:
    """The nearest dealers and workshops when the service is due; None when it is not, or there are none."""
    at = trigger_time(trigger)
    reason = due(facts, at, int(params["within_days"]), float(params["within_km"]))
    here = user_position(facts)
    if reason is None or here is None:
        return None
    places = find_places(session, ("pois",), here, float(params["radius_m"]), categories=CATEGORIES)
    places = places[: int(params["limit"])]
    if not places:
        return None
    items = [_place(place, at) for place in places]
    product_id = trigger.product_id or lookup(facts, "event.product_id") or lookup(facts, "product.id")
    return RecipeResult(
        title=_title(reason, at, product_label(facts, "vehicle")),
        body=_body(places, items, at),
        payload={"due": reason.to_dict(at), "places": items},
        collapse_key=f"service:{product_id}" if product_id else None,
        expires_at=at + timedelta(days=1),
    )


def _place(place: Place, at: datetime) -> dict[str, Any]:
    item = place.summary()
    hours = place.properties.get("opening_hours")
    item["opening_hours"] = hours
    item.update(opening_state(hours, place.time_zone, at))
    return item


def _title(reason: Due, at: datetime, vehicle: str) -> str:
    if reason.due_at is not None:
        days = _days(reason.due_at, at)
        if days < 0:
            return f"Your {vehicle}'s service is overdue"
        if days == 0:
            return f"Your {vehicle}'s service is due today"
        return f"Your {vehicle}'s service is due in {days} {'day' if days == 1 else 'days'}"
    return f"Your {vehicle}'s service is due in {reason.remaining_km:,.0f} km"


def _body(places: list[Place], items: list[Mapping[str, Any]], at: datetime) -> str:
    """The nearest place and whether it is open; unless it is open, also the nearest one open now."""
    place, item = places[0], items[0]
    what, name = _kind_and_name(place)
    text = f"Nearest {what}: {name}, {distance_text(place.distance_m)} away"
    change = _when(item.get("next_change"))
    if item.get("open_now") is True:
        return text + ", open now" + (f" until {_clock(change, at)}" if change is not None else "") + "."
    if item.get("open_now") is False:
        text += ", closed now" + (f"; opens {_clock(change, at)}" if change is not None else "")
    text += "."
    open_now = next(((p, i) for p, i in zip(places[1:], items[1:]) if i.get("open_now") is True), None)
    if open_now is not None:
        other, state = open_now
        kind, other_name = _kind_and_name(other)
        until = _when(state.get("next_change"))
        text += (f" Open now: {other_name} ({kind}), {distance_text(other.distance_m)} away"
                 + (f", until {_clock(until, at)}" if until else "") + ".")
    return text


def _kind_and_name(place: Place) -> tuple[str, str]:
    what = place.properties.get("category") or "workshop"
    return what, place.properties.get("name") or f"a {what}"


def _clock(moment: datetime, at: datetime) -> str:
    local_at = at.astimezone(moment.tzinfo)
    if moment.date() == local_at.date():
        return f"{moment:%H:%M}"
    if moment.date() == (local_at + timedelta(days=1)).date():
        return f"tomorrow {moment:%H:%M}"
    return f"{moment:%a %H:%M}"
