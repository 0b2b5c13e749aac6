"""Per-feature validation: issues a person understands, limits, and geometry checks.

A bad feature yields :class:`Issue` objects and is skipped; it never fails the
whole file. Only two things do: a file that is not what it claims to be
(:class:`FormatError`) and a file past the features-per-file limit
(:class:`LimitExceeded`), so that an import can answer 422/413 with nothing
half-written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import shapely
from opening_hours import OpeningHours
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry

BBox = tuple[float, float, float, float]  # (min_lon, min_lat, max_lon, max_lat)

# Issue levels: "error" rejects the feature, "warning" keeps it with something
# ignored, "repaired" keeps it after a safe geometry repair.
ERROR = "error"
WARNING = "warning"
REPAIRED = "repaired"


@dataclass(frozen=True, slots=True)
class Issue:
    """A problem with one feature: which feature (index or id), which field, what is wrong."""

    feature: int | str
    field: str
    message: str
    level: str = ERROR
    code: str = "invalid"

    def __str__(self) -> str:
        return f"feature {self.feature}: {self.field}: {self.message}"


class FormatError(ValueError):
    """The file is not what it claims to be, or not readable at all; the message says what was found."""


class LimitExceeded(FormatError):
    """The file is past a configured limit (features per file)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Configurable limits; past ``max_features`` the whole file fails, the others reject one feature."""

    max_features: int = 2_000_000
    max_vertices: int = 50_000
    max_depth: int = 32
    # A repair may change a polygon's area by at most this fraction to count as safe.
    max_repair_area_change: float = 0.01


class GeometryRejected(ValueError):
    """Raised inside geometry checks; carries the user-facing message."""


_KNOWN_TYPES = ("Point", "LineString", "Polygon", "MultiPoint", "MultiLineString", "MultiPolygon")


def json_depth(value: Any) -> int:
    """Nesting depth of a JSON value (a scalar is 0), computed without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        if kind is dict:
            item = item.values()
        elif kind is not list and kind is not tuple:
            continue
        depth += 1
        if depth > deepest:
            deepest = depth
        for child in item:
            if type(child) in (dict, list, tuple):
                stack.append((child, depth))
    return deepest


def deeper_than(value: Any, limit: int) -> bool:
    """``json_depth(value) > limit``, stopping at the first branch past the limit (cheaper for a feature's properties).

    Only containers are visited. Very large limits use :func:`json_depth`
    itself, so that nothing here recurses deeper than a few hundred frames.
    """
    if limit > 200:
        return json_depth(value) > limit
    kind = type(value)
    if kind is dict:
        children: Any = value.values()
    elif kind is list or kind is tuple:
        children = value
    else:
        return limit < 0
    if limit < 1:
        return True
    for child in children:
        if type(child) in _CONTAINERS and deeper_than(child, limit - 1):
            return True
    return False


_CONTAINERS = frozenset((dict, list, tuple))


_NUMBER_TYPES = (int, float)


def _positions(coords: Any, depth: int, kind: str) -> list[tuple[float, float]]:
    """Flatten one ring/line (depth 1) or a point (depth 0) into (lon, lat) tuples."""
    if depth == 0:
        coords = [coords]
    if type(coords) is not list and type(coords) is not tuple:
        raise GeometryRejected(f"{kind} coordinates must be an array")
    out = []
    append = out.append
    for pos in coords:
        if (type(pos) is not list and type(pos) is not tuple) or len(pos) < 2:
            raise GeometryRejected(f"{kind} has a position that is not [longitude, latitude]: {pos!r}"[:200])
        lon, lat = pos[0], pos[1]
        # type() and not isinstance(): a bool is an int but never a coordinate.
        if type(lon) not in _NUMBER_TYPES or type(lat) not in _NUMBER_TYPES:
            raise GeometryRejected(f"{kind} has a position that is not two numbers: {list(pos)!r}"[:200])
        if not (-1e300 < lon < 1e300 and -1e300 < lat < 1e300):
            raise GeometryRejected(f"{kind} has a coordinate that is not a finite number")
        append((float(lon), float(lat)))
    return out


def _check_ranges(lon_min: float, lat_min: float, lon_max: float, lat_max: float) -> None:
    if -180 <= lon_min and lon_max <= 180 and -90 <= lat_min and lat_max <= 90:
        return
    bad_lat = lat_min if lat_min < -90 else lat_max
    swapped_fits = -90 <= lon_min and lon_max <= 90 and -180 <= lat_min and lat_max <= 180
    if not (-90 <= lat_min and lat_max <= 90):
        hint = " — the coordinates look swapped: GeoJSON order is [longitude, latitude]" if swapped_fits else ""
        raise GeometryRejected(f"latitude {bad_lat:g} is out of range (-90 to 90){hint}")
    bad_lon = lon_min if lon_min < -180 else lon_max
    raise GeometryRejected(f"longitude {bad_lon:g} is out of range (-180 to 180)")


def _check_service_area(bounds: BBox, area: BBox) -> None:
    lon_min, lat_min, lon_max, lat_max = bounds
    a_lon_min, a_lat_min, a_lon_max, a_lat_max = area
    if a_lon_min <= lon_min and lon_max <= a_lon_max and a_lat_min <= lat_min and lat_max <= a_lat_max:
        return
    if a_lon_min <= lat_min and lat_max <= a_lon_max and a_lat_min <= lon_min and lon_max <= a_lat_max:
        raise GeometryRejected(
            "latitude and longitude look swapped: the feature is outside the service area, but would be inside "
            "it with the two exchanged (GeoJSON order is [longitude, latitude])"
        )
    raise GeometryRejected(
        f"the feature at ({lat_min:.5f}, {lon_min:.5f}) lies outside the service area "
        f"(longitude {a_lon_min:g} to {a_lon_max:g}, latitude {a_lat_min:g} to {a_lat_max:g})"
    )


def _ring(coords: Any, kind: str, notes: list[tuple[str, str]]) -> list[tuple[float, float]]:
    ring = _positions(coords, 1, kind)
    if len(ring) >= 3 and ring[0] != ring[-1]:
        ring.append(ring[0])
        notes.append((REPAIRED, "a polygon ring was not closed; it was closed by repeating its first position"))
    if len(ring) < 4:
        raise GeometryRejected(f"a polygon ring needs at least 4 positions, it has {len(ring)}")
    return ring


_REASON_WORDS = {
    "Self-intersection": "the boundary crosses itself",
    "Ring Self-intersection": "a ring touches itself",
    "Too few points": "it has fewer than 2 distinct points",
    "Hole lies outside shell": "a hole lies outside the outer ring",
    "Nested shells": "rings are nested in each other",
    "Interior is disconnected": "a hole cuts the polygon in two",
    "Duplicate Rings": "a ring is repeated",
    "Nested holes": "a hole lies inside another hole",
}


def _reason(geom: BaseGeometry) -> str:
    raw = shapely.is_valid_reason(geom)
    match = re.match(r"^([A-Za-z -]+?)\s*\[([-\d.eE]+) ([-\d.eE]+)\]", raw)
    if not match:
        return raw
    words = _REASON_WORDS.get(match.group(1), match.group(1).lower())
    return f"{words} near latitude {float(match.group(3)):.6f}, longitude {float(match.group(2)):.6f}"


def _repair(geom: BaseGeometry, limits: Limits) -> tuple[BaseGeometry, str]:
    """Repair with make_valid when the result is the same kind of shape with (almost) the same area."""
    reason = _reason(geom)
    if geom.geom_type != "Polygon":
        raise GeometryRejected(f"invalid {geom.geom_type}: {reason}")
    fixed = shapely.make_valid(geom)
    polygons = [g for g in getattr(fixed, "geoms", [fixed]) if g.geom_type == "Polygon" and g.area > 0]
    if len(polygons) != 1:
        raise GeometryRejected(
            f"invalid polygon: {reason}; repairing it would split it into {len(polygons)} parts, so it was rejected"
        )
    repaired = polygons[0]
    before = abs(shapely.area(geom)) or repaired.area
    if repaired.area == 0 or abs(repaired.area - before) > limits.max_repair_area_change * repaired.area:
        raise GeometryRejected(f"invalid polygon: {reason}; repairing it would change its area, so it was rejected")
    return repaired, f"invalid polygon ({reason}) was repaired"


def parse_geometry(
    geometry: Any, limits: Limits, service_area: BBox | None = None, *, allow_multi: bool = False
) -> tuple[BaseGeometry, list[tuple[str, str]]]:
    """A shapely Point, LineString or Polygon from a GeoJSON geometry, plus ``(level, note)`` pairs.

    Raises :class:`GeometryRejected` with a message a person understands when
    the geometry cannot be used. A single-part Multi* geometry is unwrapped;
    with ``allow_multi`` the largest part of a multi-part one is kept (noted).
    """
    if not isinstance(geometry, dict):
        raise GeometryRejected("the feature has no geometry" if geometry is None else "geometry must be a JSON object")
    simple = simple_positions(geometry, limits, service_area)
    if simple is not None:  # the common case, without the general checks below (same result)
        kind, positions = simple
        return (shapely.points(positions) if kind == "Point" else shapely.linestrings(positions)), []
    kind = geometry.get("type")
    if kind not in _KNOWN_TYPES:
        raise GeometryRejected(f"geometry type {kind!r} is not supported (use Point, LineString or Polygon)")
    coords = geometry.get("coordinates")
    notes: list[tuple[str, str]] = []
    if kind.startswith("Multi"):
        if not isinstance(coords, list) or not coords:
            raise GeometryRejected(f"{kind} has no parts")
        single = kind[5:]
        if len(coords) > 1 and not allow_multi:
            raise GeometryRejected(f"{kind} with {len(coords)} parts is not supported; split it into {single}s")
        parts = []
        for c in coords:
            part, part_notes = parse_geometry({"type": single, "coordinates": c}, limits, service_area)
            parts.append(part)
            notes.extend(part_notes)
        if len(parts) == 1:
            return parts[0], notes
        measure = (lambda g: g.area) if single == "Polygon" else (lambda g: g.length)
        notes.append((WARNING, f"{kind} with {len(parts)} parts: only the largest part is used"))
        return max(parts, key=measure), notes
    if kind == "Point":
        positions = _positions(coords, 0, kind)
        geom: BaseGeometry = shapely.points(positions[0])
    elif kind == "LineString":
        positions = _positions(coords, 1, kind)
        if len(positions) < 2:
            raise GeometryRejected(f"a LineString needs at least 2 positions, it has {len(positions)}")
        first = positions[0]
        if all(p == first for p in positions):
            raise GeometryRejected("a LineString needs at least 2 distinct positions")
        geom = shapely.linestrings(positions)
    else:
        if not isinstance(coords, list) or not coords:
            raise GeometryRejected("a Polygon needs at least one ring")
        rings = [_ring(r, kind, notes) for r in coords]
        positions = [p for r in rings for p in r]
        geom = Polygon(rings[0], rings[1:])
    if len(positions) > limits.max_vertices:
        raise GeometryRejected(f"{kind} has {len(positions):,} vertices; the limit is {limits.max_vertices:,}")
    if len(positions) == 1:
        lon, lat = positions[0]
        bounds = (lon, lat, lon, lat)
    else:
        lons = [p[0] for p in positions]
        lats = [p[1] for p in positions]
        bounds = (min(lons), min(lats), max(lons), max(lats))
    _check_ranges(*bounds)
    if service_area is not None:
        _check_service_area(bounds, service_area)
    # A line with two distinct positions is always valid; only polygons need the (costly) check.
    if kind == "Polygon" and not geom.is_valid:
        geom, note = _repair(geom, limits)
        notes.append((REPAIRED, note))
    return geom, notes


def simple_positions(geometry: Any, limits: Limits, service_area: BBox | None = None) -> tuple[str, Any] | None:
    """The positions of a plain Point or LineString that :func:`parse_geometry` accepts as it is, else ``None``.

    Most features are such a point or line: ``("Point", (lon, lat))`` or
    ``("LineString", [(lon, lat), ...])``, checked (numbers, ranges, the
    vertex limit, two distinct positions, the service area) but not built,
    so that a reader can build many at once with :func:`build_simple`.
    ``None`` means "take the full path", which finds the first problem in
    the usual order (it may still be a valid geometry).
    Raises :class:`GeometryRejected` only for the service area, as
    :func:`parse_geometry` would.
    """
    if type(geometry) is not dict:
        return None
    kind = geometry.get("type")
    if kind != "Point" and kind != "LineString":
        return None
    coords = geometry.get("coordinates")
    if type(coords) is not list and type(coords) is not tuple:
        return None
    if kind == "Point":
        if len(coords) < 2 or limits.max_vertices < 1:
            return None
        lon, lat = coords[0], coords[1]
        if type(lon) not in _NUMBER_TYPES or type(lat) not in _NUMBER_TYPES:
            return None
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):  # also false for NaN
            return None
        lon, lat = float(lon), float(lat)
        if service_area is not None:
            _check_service_area((lon, lat, lon, lat), service_area)
        return kind, (lon, lat)
    if not 2 <= len(coords) <= limits.max_vertices:
        return None
    positions = []
    append = positions.append
    for pos in coords:
        if (type(pos) is not list and type(pos) is not tuple) or len(pos) < 2:
            return None
        lon, lat = pos[0], pos[1]
        if type(lon) not in _NUMBER_TYPES or type(lat) not in _NUMBER_TYPES:
            return None
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            return None
        append((float(lon), float(lat)))
    first = positions[0]
    for p in positions:
        if p != first:
            break
    else:
        return None  # no two distinct positions: the full path says so
    if service_area is not None:
        lons = [p[0] for p in positions]
        lats = [p[1] for p in positions]
        _check_service_area((min(lons), min(lats), max(lons), max(lats)), service_area)
    return kind, positions


def build_simple(items: list[tuple[str, Any]]) -> list[BaseGeometry]:
    """The shapely geometries of :func:`simple_positions` results, built with one call per type."""
    points = [positions for kind, positions in items if kind == "Point"]
    lines = [positions for kind, positions in items if kind != "Point"]
    built_points = iter(shapely.points(np.array(points, dtype=float)).tolist() if points else ())
    built_lines: Any = ()
    if lines:
        coords = np.array([p for line in lines for p in line], dtype=float)
        index = np.repeat(np.arange(len(lines)), [len(line) for line in lines])
        built_lines = shapely.linestrings(coords, indices=index).tolist()
    built_lines = iter(built_lines)
    return [next(built_points) if kind == "Point" else next(built_lines) for kind, _ in items]


@lru_cache(maxsize=65536)
def opening_hours_error(expression: str) -> str | None:
    """``None`` when ``expression`` is valid OSM opening_hours syntax, else where it goes wrong."""
    try:
        OpeningHours(expression)
    except Exception as exc:  # the parser raises ParserError or SyntaxError depending on version
        where = re.search(r"--> \d+:(\d+)", str(exc))
        return f"error at character {where.group(1)}" if where else "syntax error"
    return None
