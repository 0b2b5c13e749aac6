"""``spots_near_destination``: the spots the trip's vehicle fits and may park at, near the destination, at the ETA.

The flagship recipe. It runs the spot search of ``GET /v1/spots`` (the
process's finder: the in-process index or PostGIS) around the destination
for a stay of ``duration_min`` starting at the ETA, so the suggestion's
``payload.spots`` are exactly the items that endpoint would answer for the
same question. No destination, no vehicle length, or no spot: no suggestion.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any, Mapping

from sqlalchemy.orm import Session

from geodata.search import SpotResult, to_dicts

from ...errors import InvalidInput
from ...rules.facts import lookup
from ..proposals import RecipeResult
from ..spot_query import SpotQuery
from ..spots import vehicle_of
from .context import destination, distance_text, eta, product_label, trip_key

_NO_PRODUCT = uuid.UUID(int=0)


def run(session: Session, container: Any, params: Mapping[str, Any], facts: Mapping[str, Any],
        trigger: Any) -> RecipeResult | None:
    """Up to ``limit`` fitting, allowed spots within ``radius_m`` of the destination; None when there are none."""
    where = destination(facts)
    attributes = lookup(facts, "product.attributes")
    if where is None or not isinstance(attributes, Mapping):
        return None
    try:
        vehicle = vehicle_of(SimpleNamespace(attributes=dict(attributes), brand="", name=""))
    except InvalidInput:  # the model has no length: nothing can be said about what it fits
        return None
    arrival = eta(facts, trigger)
    duration_min = int(params["duration_min"])
    query = SpotQuery(lat=where[0], lon=where[1], radius_m=float(params["radius_m"]),
                      product_id=_product_id(facts, trigger), at=arrival, duration_min=duration_min,
                      limit=int(params["limit"]))
    results = container.spot_finder.find(session, query, vehicle)
    if not results:
        return None
    key = trip_key(facts, trigger)
    return RecipeResult(
        title=_title(len(results), product_label(facts, "your vehicle")),
        body=_body(results[0], arrival),
        payload={"destination": {"lat": where[0], "lon": where[1]}, "eta": arrival.isoformat(),
                 "spots": to_dicts(results)},
        collapse_key=f"spots:{key}" if key else None,
        expires_at=arrival + timedelta(minutes=duration_min),
    )


def _product_id(facts: Mapping[str, Any], trigger: Any) -> uuid.UUID:
    # The finders do not read it (the vehicle is given); it names the product the spots are for.
    for value in (trigger.product_id, lookup(facts, "product.id")):
        try:
            return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
        except ValueError:
            continue
    return _NO_PRODUCT


def _title(count: int, vehicle: str) -> str:
    return f"{count} {'spot' if count == 1 else 'spots'} your {vehicle} fits near your destination"


def _until(result: SpotResult, arrival: datetime) -> str:
    until = result.allowed_until
    if until is None:
        return "with no time limit"
    local_arrival = arrival.astimezone(until.tzinfo) if until.tzinfo is not None else arrival
    if until.date() == local_arrival.date():
        return f"until {until:%H:%M}"
    return f"until {until:%a %H:%M}"


def _body(nearest: SpotResult, arrival: datetime) -> str:
    rate = nearest.decision.rate
    if nearest.fee:
        fee = f"paid ({rate.describe()})" if rate is not None else "paid"
    else:
        fee = "free"
    where = "at your destination" if nearest.distance_m < 1 else f"{distance_text(nearest.distance_m)} from it"
    return f"The nearest is {where}: {fee}, parking allowed {_until(nearest, arrival)}."
