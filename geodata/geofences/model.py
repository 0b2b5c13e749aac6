"""The geofence model (SUGGESTIONS.md "Geofences") and the parsing of untrusted geofence objects.

A geofence is a circle (centre + radius in geodesic metres) or a Polygon /
MultiPolygon with holes, in longitude/latitude. Optional: a ``schedule`` (an
OSM opening_hours string evaluated in ``timezone``: the fence exists only
while it is open), ``dwell_s`` (time inside before a ``geofence.dwelled``
event) and ``hysteresis_m`` (how far past the boundary a fix must be before it
counts, against GPS jitter; see :mod:`geodata.geofences.machine`).

:func:`parse_geofence` turns a JSON object as an operator sends it into a
:class:`Geofence`, collecting every problem as an :class:`~geodata.validate.Issue`
per field; a polygon that is invalid but safely repairable is repaired (and
says so), otherwise the whole geofence is rejected with
:class:`GeofenceInvalid`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping
from zoneinfo import ZoneInfoNotFoundError

import shapely
from opening_hours import State
from shapely.geometry import MultiPolygon, Point, Polygon, mapping
from shapely.geometry.base import BaseGeometry

from geodata.allowed import compile_when, zone
from geodata.validate import (
    ERROR,
    REPAIRED,
    WARNING,
    GeometryRejected,
    Issue,
    Limits,
    opening_hours_error,
    parse_geometry,
)

DEFAULT_HYSTERESIS_M = 20.0
# Fixes less precise than this never move anyone in or out of a fence (see machine.py).
DEFAULT_MAX_ACCURACY_M = 100.0


@dataclass(frozen=True, slots=True)
class GeofenceLimits:
    """What a single geofence may be; past these it is rejected."""

    min_radius_m: float = 10.0
    max_radius_m: float = 10_000.0
    max_vertices: int = 10_000
    max_hysteresis_m: float = 500.0
    max_dwell_s: float = 7 * 24 * 3600.0
    # A repair may change a polygon's area by at most this fraction to count as safe.
    max_repair_area_change: float = 0.01


DEFAULT_LIMITS = GeofenceLimits()


@dataclass(frozen=True, slots=True, eq=False)
class Geofence:
    """One geofence. ``geometry`` is the centre Point of a circle (then ``radius_m`` is set) or a (Multi)Polygon.

    Build circles with :meth:`circle`; untrusted input goes through
    :func:`parse_geofence`. Times are judged in ``timezone`` (IANA name);
    ``country`` (ISO code) makes ``PH`` (public holidays) in a schedule work.
    """

    id: str
    geometry: BaseGeometry
    radius_m: float | None = None
    schedule: str | None = None
    timezone: str = "UTC"
    country: str | None = None
    dwell_s: float | None = None
    hysteresis_m: float = DEFAULT_HYSTERESIS_M
    tag: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        kind = self.geometry.geom_type
        if self.radius_m is not None:
            if kind != "Point" or not self.radius_m > 0:
                raise ValueError("a circle needs a Point centre and a positive radius_m")
        elif kind not in ("Polygon", "MultiPolygon"):
            raise ValueError(f"a geofence is a circle or a Polygon/MultiPolygon, not a {kind}")
        if not self.hysteresis_m >= 0:
            raise ValueError("hysteresis_m must be >= 0")
        if self.dwell_s is not None and not self.dwell_s >= 0:
            raise ValueError("dwell_s must be >= 0")

    @classmethod
    def circle(cls, id: str, lat: float, lon: float, radius_m: float, **fields: Any) -> Geofence:
        """A circle of ``radius_m`` geodesic metres around (lat, lon)."""
        return cls(id, Point(lon, lat), radius_m=float(radius_m), **fields)

    @property
    def is_circle(self) -> bool:
        return self.radius_m is not None

    def is_active(self, at: datetime) -> bool:
        """Whether the fence exists at ``at`` (an aware datetime): always without a schedule.

        A schedule whose state is "unknown" at ``at`` (an opening_hours
        ``unknown`` rule) counts as closed: the fence never fires on a guess.
        """
        if self.schedule is None:
            return True
        return _schedule_open(self.schedule, self.timezone, self.country, at)

    def next_change(self, at: datetime) -> datetime | None:
        """When the schedule next opens or closes after ``at`` (``None``: never, or no schedule)."""
        if self.schedule is None:
            return None
        hours = compile_when(self.schedule, self.timezone, self.country)
        change = hours.next_change(at.astimezone(zone(self.timezone)))
        return None if change is None else change.astimezone(at.tzinfo)

    def to_dict(self) -> dict[str, Any]:
        """The geofence as the JSON object :func:`parse_geofence` reads (round-trips)."""
        out: dict[str, Any] = {"id": self.id}
        if self.radius_m is not None:
            out["center"] = {"lat": self.geometry.y, "lon": self.geometry.x}
            out["radius_m"] = self.radius_m
        else:
            out["geometry"] = mapping(self.geometry)
        for name in ("schedule", "country", "dwell_s", "tag"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        out["timezone"] = self.timezone
        out["hysteresis_m"] = self.hysteresis_m
        if self.metadata:
            out["metadata"] = dict(self.metadata)
        return out


# Per schedule, the last interval [start, end) of constant state seen: many fences share a few
# schedules, and a schedule changes state a few times a day, so most answers come from here.
_SCHEDULE_SPANS: dict[tuple[str, str, str | None], tuple[float, float, bool]] = {}
_SCHEDULE_SPANS_MAX = 65536


def _schedule_open(schedule: str, tz: str, country: str | None, at: datetime) -> bool:
    key = (schedule, tz, country)
    ts = at.timestamp()
    span = _SCHEDULE_SPANS.get(key)
    if span is not None and span[0] <= ts < span[1]:
        return span[2]
    hours = compile_when(schedule, tz, country)
    local = at.astimezone(zone(tz))
    is_open = hours.state(local)[0] == State.OPEN
    change = hours.next_change(local)
    if len(_SCHEDULE_SPANS) >= _SCHEDULE_SPANS_MAX:
        _SCHEDULE_SPANS.clear()
    # "No change" may only mean "none within the evaluator's horizon": look again after a day at most.
    end = ts + 86400.0 if change is None else min(change.timestamp(), ts + 86400.0)
    _SCHEDULE_SPANS[key] = (ts, end, is_open)
    return is_open


class GeofenceInvalid(ValueError):
    """The geofence cannot be used; ``issues`` says which fields are wrong and why."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = issues
        super().__init__("; ".join(f"{i.field}: {i.message}" for i in issues))


class _Collector:
    def __init__(self, feature: int | str) -> None:
        self.feature = feature
        self.issues: list[Issue] = []

    def add(self, name: str, message: str, level: str = ERROR, code: str = "invalid") -> None:
        self.issues.append(Issue(self.feature, name, message, level, code))

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.level == ERROR]


def _number(c: _Collector, data: Mapping[str, Any], name: str, lo: float, hi: float, unit: str) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    # type() and not isinstance(): a bool is an int but never a measure.
    if type(value) not in (int, float) or not math.isfinite(value):
        c.add(name, f"must be a number of {unit}, got {value!r}"[:200])
        return None
    if not lo <= value <= hi:
        c.add(name, f"{value:g} {unit} is out of range ({lo:g} to {hi:g})", code="out_of_range")
        return None
    return float(value)


def _text(c: _Collector, data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        c.add(name, "must be a non-empty string")
        return None
    return value


def _center(c: _Collector, data: Mapping[str, Any]) -> Point | None:
    center = data.get("center")
    if not isinstance(center, Mapping) or "lat" not in center or "lon" not in center:
        c.add("center", 'must be an object {"lat": ..., "lon": ...}')
        return None
    lat, lon = center["lat"], center["lon"]
    if type(lat) not in (int, float) or type(lon) not in (int, float) or not math.isfinite(lat + lon):
        c.add("center", "lat and lon must be numbers")
        return None
    if not -90 <= lat <= 90:
        hint = " — lat and lon look swapped" if -90 <= lon <= 90 and -180 <= lat <= 180 else ""
        c.add("center", f"latitude {lat:g} is out of range (-90 to 90){hint}", code="out_of_range")
        return None
    if not -180 <= lon <= 180:
        c.add("center", f"longitude {lon:g} is out of range (-180 to 180)", code="out_of_range")
        return None
    return Point(float(lon), float(lat))


def _polygons(c: _Collector, geometry: Any, limits: GeofenceLimits) -> BaseGeometry | None:
    """A valid Polygon or MultiPolygon from GeoJSON, each part checked (and safely repaired) on its own."""
    if not isinstance(geometry, Mapping):
        c.add("geometry", "must be a GeoJSON Polygon or MultiPolygon object")
        return None
    kind = geometry.get("type")
    coords = geometry.get("coordinates")
    if kind == "Polygon":
        parts_coords = [coords]
    elif kind == "MultiPolygon":
        if not isinstance(coords, list) or not coords:
            c.add("geometry", "MultiPolygon has no parts")
            return None
        parts_coords = coords
    else:
        c.add("geometry", f"geometry type {kind!r} is not a geofence: use Polygon or MultiPolygon, "
                          "or a circle (center + radius_m)")
        return None
    part_limits = Limits(max_vertices=limits.max_vertices, max_repair_area_change=limits.max_repair_area_change)
    parts: list[Polygon] = []
    vertices = 0
    for k, part_coords in enumerate(parts_coords):
        where = f"part {k + 1}: " if len(parts_coords) > 1 else ""
        try:
            part, notes = parse_geometry({"type": "Polygon", "coordinates": part_coords}, part_limits)
        except GeometryRejected as exc:
            c.add("geometry", f"{where}{exc}", code="invalid_geometry")
            continue
        for level, note in notes:
            c.add("geometry", f"{where}{note}", level, "repaired" if level == REPAIRED else "ignored")
        vertices += int(shapely.get_num_coordinates(part))
        parts.append(part)
    if len(parts) != len(parts_coords):
        return None
    if vertices > limits.max_vertices:
        c.add("geometry", f"{kind} has {vertices:,} vertices; the limit is {limits.max_vertices:,}", code="too_large")
        return None
    if len(parts) == 1:
        return parts[0]
    multi = MultiPolygon(parts)
    if multi.is_valid:
        return multi
    # Overlapping parts: "inside any part" is exactly their union, so merging them changes nothing a user sees.
    merged = shapely.union_all(parts)
    if merged.geom_type not in ("Polygon", "MultiPolygon") or merged.is_empty:
        c.add("geometry", "the parts overlap and cannot be merged into one area", code="invalid_geometry")
        return None
    c.add("geometry", f"the {len(parts)} parts of the MultiPolygon overlap; they were merged into one area "
                      "(inside any part is inside)", REPAIRED, "repaired")
    return merged


def parse_geofence(data: Any, *, limits: GeofenceLimits = DEFAULT_LIMITS,
                   default_timezone: str = "UTC") -> tuple[Geofence, list[Issue]]:
    """A :class:`Geofence` from an untrusted JSON object, plus notes (repairs, warnings).

    Shape: ``{"id", "center": {"lat", "lon"}, "radius_m"}`` for a circle or
    ``{"id", "geometry": <GeoJSON Polygon|MultiPolygon>}``, and optionally
    ``schedule``, ``timezone``, ``country``, ``dwell_s``, ``hysteresis_m``,
    ``tag``, ``metadata``. Raises :class:`GeofenceInvalid` listing every
    field that is wrong.
    """
    if not isinstance(data, Mapping):
        raise GeofenceInvalid([Issue("geofence", "geofence", "must be a JSON object")])
    raw_id = data.get("id")
    c = _Collector(raw_id if isinstance(raw_id, str) and raw_id else "geofence")
    fence_id = _text(c, data, "id")
    if "id" not in data:
        c.add("id", "is required", code="required")

    geometry: BaseGeometry | None = None
    radius = None
    has_center, has_geometry = "center" in data, "geometry" in data
    if has_center == has_geometry:
        c.add("geometry", "give either center + radius_m (a circle) or geometry (a Polygon or MultiPolygon)",
              code="required")
    elif has_center:
        geometry = _center(c, data)
        if "radius_m" not in data:
            c.add("radius_m", "is required for a circle", code="required")
        radius = _number(c, data, "radius_m", limits.min_radius_m, limits.max_radius_m, "metres")
    else:
        if "radius_m" in data:
            c.add("radius_m", "only a circle (center) has a radius; it was ignored", WARNING, "ignored")
        geometry = _polygons(c, data["geometry"], limits)

    tz = data.get("timezone", default_timezone)
    if not isinstance(tz, str) or not tz:
        c.add("timezone", "must be an IANA time zone name such as Europe/Berlin")
        tz = None
    else:
        try:
            zone(tz)
        except (ZoneInfoNotFoundError, ValueError):
            c.add("timezone", f"unknown time zone {tz!r} (use an IANA name such as Europe/Berlin)"[:200])
            tz = None
    country = _text(c, data, "country")
    if country is not None and not (len(country) == 2 and country.isalpha()):
        c.add("country", "must be a two-letter ISO country code")
        country = None
    schedule = _text(c, data, "schedule")
    if schedule is not None:
        problem = opening_hours_error(schedule)
        if problem:
            c.add("schedule", f"not an OSM opening_hours expression ({problem}): {schedule!r}"[:200])
            schedule = None
        elif tz is not None:
            try:
                compile_when(schedule, tz, country.upper() if country else None)
            except Exception as exc:  # the parser raises different types depending on version
                c.add("schedule", f"cannot be evaluated: {exc}"[:200])
                schedule = None
    dwell = _number(c, data, "dwell_s", 0, limits.max_dwell_s, "seconds")
    hysteresis = _number(c, data, "hysteresis_m", 0, limits.max_hysteresis_m, "metres")
    tag = _text(c, data, "tag")
    metadata = data.get("metadata")
    if metadata is not None and not isinstance(metadata, Mapping):
        c.add("metadata", "must be a JSON object")
    if c.errors or geometry is None or fence_id is None or tz is None:
        raise GeofenceInvalid(c.errors or [Issue(c.feature, "geofence", "is invalid")])
    fence = Geofence(
        fence_id, geometry, radius_m=radius, schedule=schedule, timezone=tz,
        country=country.upper() if country else None, dwell_s=dwell,
        hysteresis_m=DEFAULT_HYSTERESIS_M if hysteresis is None else hysteresis, tag=tag,
        metadata=dict(metadata or {}),
    )
    return fence, c.issues
