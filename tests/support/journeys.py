"""Phones driving to a destination: the load of the context pipeline (benchmark 4, the reliability tests).

Each user drives a straight 3 km road, back and forth, at 10 m/s: a trip
event at the start of every leg, then one location fix every ``step_s``
seconds (the phone's own ``speed_mps``), and 100 s parked at the end before
the next leg back. A circle geofence (tag ``station``) sits on the middle of
each user's road, so every leg makes about five triggers: ``trip.started``,
``geofence.entered`` and ``.exited``, ``trip.approaching`` (1,500 m, rule
:data:`APPROACHING_RULE`) and ``trip.arrived``. Three rules (approaching,
entering a station, arriving) turn them into ``message`` suggestions.

Everything is deterministic in the user's index and the journey's start
time, so the same events can be sent twice (in parallel, then serially) and
compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Iterator

from geographiclib.geodesic import Geodesic

ORIGIN = (52.40, 13.20)  # south-west of Berlin: users' roads are laid out on a grid from here
ROAD_M = 3000.0
SPEED_MPS = 10.0
PARKED_S = 100
LEG_S = int(ROAD_M / SPEED_MPS) + PARKED_S  # 400 s: a leg, then parked
FENCE_RADIUS_M = 100
GRID_STEP_M = 1500.0  # roads 1.5 km apart, 3.5 km long rows
ROADS_PER_ROW = 40

APPROACHING_RULE = {
    "name": "almost there", "trigger": {"event": "trip.approaching", "within_m": 1500},
    "conditions": {"all": [{"fact": "trip.distance_m", "op": "<=", "value": 1500}]},
    "action": {"recipe": "message", "params": {"title": "Almost there", "body": "Your destination is close."}},
    "priority": 10, "cooldown_s": 60, "enabled": True,
}
STATION_RULE = {
    "name": "passing a station", "trigger": {"event": "geofence.entered", "tag": "station"},
    "conditions": {"all": [{"fact": "geofence.tag", "op": "==", "value": "station"}]},
    "action": {"recipe": "message", "params": {"title": "A station on your way",
                                               "body": "Station {geofence.metadata.name} is right here."}},
    "priority": 5, "cooldown_s": 60, "enabled": True,
}
ARRIVED_RULE = {
    "name": "arrived", "trigger": {"event": "trip.arrived"},
    "conditions": {"all": [{"fact": "user.weekday", "op": "exists"}]},
    "action": {"recipe": "message", "params": {"title": "You have arrived", "body": "Enjoy your stay."}},
    "priority": 1, "cooldown_s": 60, "enabled": True,
}
RULES = (APPROACHING_RULE, STATION_RULE, ARRIVED_RULE)
# Triggers each rule turns into a suggestion (started and exited have no rule).
EVENTS_WITH_RULES = ("trip.approaching", "geofence.entered", "trip.arrived")


def moved(point: tuple[float, float], bearing: float, metres: float) -> tuple[float, float]:
    """``point`` moved ``metres`` along ``bearing`` (degrees), geodesic on WGS84."""
    out = Geodesic.WGS84.Direct(point[0], point[1], bearing, metres)
    return out["lat2"], out["lon2"]


@dataclass(frozen=True)
class Road:
    """One user's road: from ``start`` due north to ``end``, a station fence on its middle."""

    start: tuple[float, float]
    end: tuple[float, float]
    station: tuple[float, float]


def road(index: int) -> Road:
    """The road of user ``index`` (roads on a grid; users past the grid share roads)."""
    slot = index % (ROADS_PER_ROW * ROADS_PER_ROW)
    row, column = divmod(slot, ROADS_PER_ROW)
    start = moved(moved(ORIGIN, 90, column * GRID_STEP_M), 0, row * (ROAD_M + 500))
    return Road(start, moved(start, 0, ROAD_M), moved(start, 0, ROAD_M / 2))


def fence_body(index: int) -> dict[str, Any]:
    """The ``POST /v1/geofences`` body of road ``index``'s station."""
    station = road(index).station
    return {"name": f"station {index}", "center": {"lat": round(station[0], 6), "lon": round(station[1], 6)},
            "radius_m": FENCE_RADIUS_M, "tag": "station", "metadata": {"name": f"S{index}"}}


def _iso(t: datetime) -> str:
    return t.isoformat()


def events_between(index: int, t0: datetime, first_s: int, last_s: int, step_s: int = 1) -> list[dict[str, Any]]:
    """User ``index``'s events at seconds ``first_s`` ≤ s < ``last_s`` of the journey begun at ``t0``.

    At each whole ``step_s``: a location fix; at the start of each leg also a
    trip event (leg 0 north to the road's end, leg 1 back south, ...).
    """
    r = road(index)
    out: list[dict[str, Any]] = []
    for s in range(first_s - first_s % step_s + (step_s if first_s % step_s else 0), last_s, step_s):
        leg, into = divmod(s, LEG_S)
        start, end, bearing = (r.start, r.end, 0.0) if leg % 2 == 0 else (r.end, r.start, 180.0)
        at = t0 + timedelta(seconds=s)
        if into == 0:
            out.append({"type": "trip", "at": _iso(at),
                        "destination": {"lat": round(end[0], 6), "lon": round(end[1], 6)}})
        driven = min(ROAD_M, into * SPEED_MPS)
        lat, lon = moved(start, bearing, driven)
        speed = SPEED_MPS if driven < ROAD_M else 0.0
        out.append({"type": "location", "at": _iso(at), "lat": round(lat, 6), "lon": round(lon, 6),
                    "accuracy_m": 8.0, "speed_mps": speed})
    return out


def batches(index: int, t0: datetime, size: int, count: int, step_s: int = 1) -> Iterator[list[dict[str, Any]]]:
    """``count`` consecutive batches of user ``index`` of about ``size`` events (a leg's trip event is extra)."""
    span = size * step_s
    for k in range(count):
        yield events_between(index, t0, k * span, (k + 1) * span, step_s)


def set_up_operator(post: Callable[[str, dict[str, Any]], dict[str, Any]], roads: int) -> dict[str, Any]:
    """The station fences of ``roads`` roads and the three rules, through ``post(path, body) -> created``."""
    fences = [post("/v1/geofences", fence_body(i))["id"] for i in range(roads)]
    rules = {rule["trigger"]["event"]: post("/v1/rules", rule)["id"] for rule in RULES}
    return {"fences": fences, "rules": rules}
