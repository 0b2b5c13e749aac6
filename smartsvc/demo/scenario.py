"""The flagship scenario's facts: where, when, who drives what, and the operator's rules.

Chosen by querying the Portland feed with the spot search, not by guessing:

- apart from one 2.3 m stub (too short for any car), every curb of the feed
  where the public may park is at least 6.02 m long, so a 4.5 m car (it
  needs 5.5 m: its length plus 1 m to manoeuvre) fits every curb a smart
  fortwo (3.69 m) fits: the two would get the *same* spots. The curbs of
  6.02 m and 6.13 m take a fortwo but not a vehicle longer than 5.13 m, so
  the second driver's car is a Ford F-150 (5.89 m);
- the destination is 10 m from the 6.13 m curb: on a weekday morning the
  fortwo's nearest spot is that curb, which the F-150 cannot use;
- Wednesday 13 May 2026 (no public holiday), arriving just before 10:00
  local time: paid parking, 2 hours at most, comfortably inside the
  08:00–19:00 window (a stay across 08:00 or 19:00 is refused on this feed,
  its day and night regulations being separate curbs).

The demo checks at run time that the pushes really differ; nothing here is
printed as a claim without being checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from geographiclib.geodesic import Geodesic

TIME_ZONE = "America/Los_Angeles"
ZONE = ZoneInfo(TIME_ZONE)
#: A meeting in downtown Portland.
DESTINATION = (45.5180, -122.6800)
DESTINATION_LABEL = "a meeting in downtown Portland (45.5180, -122.6800)"
#: When the drivers leave: a Wednesday morning, local time.
TRIP_START = datetime(2026, 5, 13, 9, 54, 0, tzinfo=ZONE)
#: Where they come from: east of the river, driving west into downtown.
START_DISTANCE_M = 2600.0
START_BEARING_DEG = 80.0
SPEED_MPS = 8.0  # about 29 km/h, city traffic
FIX_EVERY_S = 30
APPROACH_WITHIN_M = 1500
FIX_ACCURACY_M = 8.0

# A vehicle's length plus this much is the curb it needs (geodata.fit's manoeuvre margin).
MANOEUVRE_MARGIN_M = 1.0


@dataclass(frozen=True)
class Car:
    """A catalogue model (``POST /v1/catalog/models``)."""

    brand: str
    name: str
    length_m: float
    width_m: float
    height_m: float
    weight_kg: float

    @property
    def label(self) -> str:
        return f"{self.brand} {self.name}"

    def body(self) -> dict[str, Any]:
        """The catalogue model as the operator posts it."""
        return {"kind": "car", "brand": self.brand, "name": self.name,
                "attributes": {"length_m": self.length_m, "width_m": self.width_m, "height_m": self.height_m,
                               "weight_kg": self.weight_kg}}


@dataclass(frozen=True)
class Driver:
    """A user of the app and the car she or he drives."""

    name: str
    external_id: str
    car: Car
    device_token: str


FORTWO = Car("smart", "fortwo", 2.69, 1.66, 1.55, 1095)
F150 = Car("Ford", "F-150", 5.89, 2.03, 1.96, 2050)
LENA = Driver("Lena", "demo-lena", FORTWO, "demo-lena-phone")
MAX = Driver("Max", "demo-max", F150, "demo-max-phone")

_SPOTS_ACTION = {"recipe": "spots_near_destination", "params": {"radius_m": 400, "limit": 5, "duration_min": 60}}
#: SUGGESTIONS.md's example rule: small cars get told about the small gaps before they arrive.
SMALL_SPOTS_RULE = {
    "name": "small spots before arrival",
    "trigger": {"event": "trip.approaching", "within_m": APPROACH_WITHIN_M},
    "conditions": {"all": [{"fact": "product.attributes.length_m", "op": "<=", "value": 3.0}]},
    "action": _SPOTS_ACTION,
    "priority": 10, "cooldown_s": 3600, "enabled": True,
}
#: The same help for every longer vehicle.
SPOTS_RULE = {
    "name": "spots before arrival",
    "trigger": {"event": "trip.approaching", "within_m": APPROACH_WITHIN_M},
    "conditions": {"all": [{"fact": "product.attributes.length_m", "op": ">", "value": 3.0}]},
    "action": _SPOTS_ACTION,
    "priority": 5, "cooldown_s": 3600, "enabled": True,
}
RULES = (SMALL_SPOTS_RULE, SPOTS_RULE)


def _iso(at: datetime) -> str:
    return at.isoformat()


def route() -> list[tuple[datetime, float, float, float, float]]:
    """The drive, one fix every :data:`FIX_EVERY_S`: ``(at, lat, lon, distance_left_m, speed_mps)``.

    A straight line at :data:`SPEED_MPS` from :data:`START_DISTANCE_M` away towards the destination,
    parked at the end.
    """
    fixes = []
    step = 0
    while True:
        left = max(START_DISTANCE_M - step * SPEED_MPS * FIX_EVERY_S, 0.0)
        point = Geodesic.WGS84.Direct(*DESTINATION, START_BEARING_DEG, left)
        fixes.append((TRIP_START + timedelta(seconds=step * FIX_EVERY_S), round(point["lat2"], 6),
                      round(point["lon2"], 6), left, SPEED_MPS if left > 0 else 0.0))
        if left == 0:
            return fixes
        step += 1


def trip_event(product_id: str) -> dict[str, Any]:
    """The phone's ``trip`` event when the driver starts the navigation."""
    return {"type": "trip", "at": _iso(TRIP_START), "destination": {"lat": DESTINATION[0], "lon": DESTINATION[1]},
            "product_id": product_id, "mode": "driving"}


def fix_event(at: datetime, lat: float, lon: float, speed_mps: float) -> dict[str, Any]:
    """One ``location`` event as the phone sends it."""
    return {"type": "location", "at": _iso(at), "lat": lat, "lon": lon, "accuracy_m": FIX_ACCURACY_M,
            "speed_mps": speed_mps}
