"""Places of the live geodata layers near a point or a straight route: chargers, workshops, dealers.

Points of interest live in the ``pois`` layer (uploaded like parking data;
see :mod:`geodata.normalize` for their ``category``, ``opening_hours`` and
``brand``); chargers may also be ``charger`` features of the ``parking``
layer. Candidates are read by their bounding box (the ``layer_features``
bbox columns, indexed with the dataset on every database) and their
category or kind, then measured geodesically in Python. A search reads at
most :data:`MAX_CANDIDATES` rows, so a very wide box in a dense layer cannot
make one suggestion read a whole country; the box is not wrapped across the
antimeridian.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Sequence

import numpy as np
from opening_hours import State
from shapely.geometry import shape
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from geodata.allowed import compile_when, zone
from geodata.geo import (
    distance_to_geometry_m,
    metres_per_degree,
    point_segment_distance_m,
)

from ...models import Dataset, LayerFeature, LiveLayer
from ..layers import public_id
from ..spot_query import usable_time_zone

MAX_CANDIDATES = 5000


@dataclass(frozen=True)
class Place:
    """One feature of a live layer, as a recipe shows it."""

    id: str
    layer: str
    lat: float
    lon: float
    distance_m: float  # from the search's origin (0 inside a polygon)
    properties: dict[str, Any]
    time_zone: str  # the dataset's zone, for its opening hours
    off_route_m: float = 0.0  # from the straight route, when the search followed one

    @property
    def connectors(self) -> tuple[str, ...]:
        return tuple(self.properties.get("connectors") or ())

    @property
    def power_kw(self) -> float | None:
        value = self.properties.get("power_kw")
        return None if value is None else float(value)

    def summary(self) -> dict[str, Any]:
        """The fields every recipe's payload shows for a place."""
        props = self.properties
        return {
            "id": self.id,
            "name": props.get("name"),
            "operator": props.get("operator"),
            "brand": props.get("brand"),
            "category": props.get("category") or ("charger" if props.get("kind") == "charger" else None),
            "location": {"lat": round(self.lat, 6), "lon": round(self.lon, 6)},
            "distance_m": round(self.distance_m, 1),
            "source": props.get("source") or {},
        }


@dataclass(frozen=True)
class Box:
    """A lon/lat box."""

    west: float
    south: float
    east: float
    north: float


def box_around(points: Sequence[tuple[float, float]], radius_m: float) -> Box:
    """The box holding every point within ``radius_m`` of ``points`` (``(lat, lon)`` pairs)."""
    lats = [p[0] for p in points]
    lons = [p[1] for p in points]
    widest_lat = max(abs(min(lats)), abs(max(lats)))  # where a degree of longitude is shortest
    m_lat, m_lon = metres_per_degree(min(widest_lat, 89.0))
    dlat, dlon = radius_m / m_lat, radius_m / max(m_lon, 1.0)
    return Box(min(lons) - dlon, max(min(lats) - dlat, -90.0), max(lons) + dlon, min(max(lats) + dlat, 90.0))


def _live(session: Session, layer: str) -> tuple[uuid.UUID, str] | None:
    row = session.execute(
        select(LiveLayer.dataset_id, Dataset.time_zone).join(Dataset, Dataset.id == LiveLayer.dataset_id)
        .where(LiveLayer.layer == layer)
    ).first()
    if row is None or row.dataset_id is None:
        return None
    return row.dataset_id, usable_time_zone(row.dataset_id, row.time_zone)


def _rows(session: Session, dataset_id: uuid.UUID, box: Box, *, kinds: Iterable[str] = (),
          categories: Iterable[str] = ()) -> list[Any]:
    what = []
    if kinds:
        what.append(LayerFeature.kind.in_(list(kinds)))
    if categories:
        what.append(LayerFeature.properties["category"].as_string().in_(list(categories)))
    query = (
        select(LayerFeature.seq, LayerFeature.geometry, LayerFeature.properties)
        .where(LayerFeature.dataset_id == dataset_id,
               LayerFeature.min_lon <= box.east, LayerFeature.max_lon >= box.west,
               LayerFeature.min_lat <= box.north, LayerFeature.max_lat >= box.south)
        .order_by(LayerFeature.seq)
        .limit(MAX_CANDIDATES)
    )
    if what:
        query = query.where(or_(*what))
    return list(session.execute(query))


def find_places(session: Session, layers: Sequence[str], origin: tuple[float, float], radius_m: float, *,
                kinds: Iterable[str] = (), categories: Iterable[str] = (),
                route_to: tuple[float, float] | None = None) -> list[Place]:
    """Features of the live ``layers`` of one of ``kinds`` or ``categories``, nearest to ``origin`` first.

    Without ``route_to``: those within ``radius_m`` of ``origin``. With it: those
    within ``radius_m`` of the straight line from ``origin`` to ``route_to`` (the
    route is not known; the straight line stands for it), still sorted by their
    distance from ``origin``.
    """
    kinds, categories = tuple(kinds), tuple(categories)
    points = [origin] if route_to is None else [origin, route_to]
    box = box_around(points, radius_m)
    found: list[Place] = []
    for layer in layers:
        live = _live(session, layer)
        if live is None:
            continue
        dataset_id, zone = live
        for seq, geometry, properties in _rows(session, dataset_id, box, kinds=kinds, categories=categories):
            geom = shape(geometry)
            spot = geom.representative_point()
            distance = distance_to_geometry_m(origin[0], origin[1], geom)
            off_route = distance
            if route_to is not None:
                off_route = float(point_segment_distance_m(
                    spot.y, spot.x, np.array([origin[0]]), np.array([origin[1]]),
                    np.array([route_to[0]]), np.array([route_to[1]]))[0])
                off_route = min(off_route, distance)
            if off_route > radius_m:
                continue
            found.append(Place(public_id(dataset_id, seq), layer, spot.y, spot.x, distance, dict(properties), zone,
                               off_route if route_to is not None else 0.0))
    found.sort(key=lambda place: (place.distance_m, place.id))
    return found


def opening_state(hours: str | None, time_zone: str, at: datetime) -> dict[str, Any]:
    """Whether a place is open at ``at`` by its opening hours, and when that changes (in its own zone).

    ``{"open_now": bool | None, "next_change": RFC 3339 | None}``: ``open_now`` is None when the hours
    are not known (or are only "unknown" at ``at``); ``next_change`` is when it next opens or closes.
    """
    if not hours:
        return {"open_now": None, "next_change": None}
    try:
        compiled = compile_when(hours, time_zone)
    except Exception:  # stored before the import checked the syntax: say nothing rather than something wrong
        return {"open_now": None, "next_change": None}
    local = at.astimezone(zone(time_zone))
    state = compiled.state(local)[0]
    change = compiled.next_change(local)
    if change is not None and change.tzinfo is None:
        change = change.replace(tzinfo=zone(time_zone))
    open_now = None if state == State.UNKNOWN else state == State.OPEN
    return {"open_now": open_now, "next_change": None if change is None else change.isoformat()}
