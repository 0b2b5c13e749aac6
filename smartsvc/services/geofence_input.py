"""Operator geofence input → a validated fence, or a 422 naming every field that is wrong.

The fields are the API's (API.md / SUGGESTIONS.md "Geofences"): ``name``,
a circle (``center`` {lat, lon} + ``radius_m``) or an area (``geometry``: a
GeoJSON Polygon or MultiPolygon, holes allowed), optional ``type``
(``circle`` | ``polygon``, must agree with the shape), ``tag``, ``metadata``,
``schedule`` (OSM opening_hours, read in ``time_zone``; ``country`` makes
``PH`` work), ``dwell_s``, ``hysteresis_m``, ``enabled``.

The geometry and the schedule are judged by :func:`geodata.geofences.parse_geofence`,
so what the API accepts is exactly what the index and the state machine can
use: a polygon that is invalid but safely repairable is repaired (and the
repair is reported in ``notes``), any other is rejected. On top of it, limits
the in-memory index needs: at most ``MAX_SPAN_DEG`` degrees across (its grid
holds a polygon's interior per cell) and the configured service area.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import string
from dataclasses import dataclass
from typing import Any, Mapping

import shapely
from shapely.geometry import mapping

from geodata.allowed import compile_when
from geodata.geofences import DEFAULT_HYSTERESIS_M, Geofence, GeofenceInvalid, GeofenceLimits, parse_geofence
from geodata.validate import ERROR

from ..errors import ApiError
from ..timeutil import is_valid_time_zone

LIMITS = GeofenceLimits()
MAX_NAME_LENGTH = 200
MAX_TAG_LENGTH = 100
MAX_SCHEDULE_LENGTH = 1000
MAX_METADATA_BYTES = 16 * 1024
MAX_METADATA_KEYS = 100
# The index lists, per grid cell of 0.002°, the polygons containing it: a polygon's area costs
# memory in every process. 2° (~220 km) covers any metropolitan area.
MAX_SPAN_DEG = 2.0
DEFAULT_TIME_ZONE = "UTC"
KINDS = ("circle", "polygon")
SHAPE_FIELDS = ("type", "center", "radius_m", "geometry")
FIELDS = ("name", *SHAPE_FIELDS, "tag", "metadata", "schedule", "time_zone", "country", "dwell_s", "hysteresis_m",
          "enabled")
# parse_geofence's names for what the API calls otherwise.
_API_NAMES = {"timezone": "time_zone", "geofence": "body", "id": "body"}


class GeofenceRejected(ApiError):
    """422: the geofence cannot be saved; ``errors`` names every offending field."""

    status = 422
    title = "Unprocessable Content"

    def __init__(self, errors: Mapping[str, list[str]]) -> None:
        detail = "; ".join(f"{name}: {' '.join(messages)}" for name, messages in errors.items())
        super().__init__(detail, errors=errors)


@dataclass(frozen=True)
class ValidGeofence:
    """What is stored for a valid geofence: the shape as GeoJSON, its size, and what the check noted."""

    fence: Geofence
    kind: str
    geometry: dict[str, Any]
    radius_m: float | None
    vertices: int
    notes: list[dict[str, str]]
    fields: dict[str, Any]


@functools.cache
def holiday_countries() -> tuple[str, ...]:
    """ISO 3166-1 codes whose public holidays (``PH``) the schedule evaluator knows."""
    known = []
    for first, second in itertools.product(string.ascii_uppercase, repeat=2):
        try:
            compile_when("24/7", DEFAULT_TIME_ZONE, first + second)
        except Exception:  # the evaluator raises its own error type for an unknown country
            continue
        known.append(first + second)
    return tuple(known)


class _Errors:
    def __init__(self) -> None:
        self.by_field: dict[str, list[str]] = {}

    def add(self, name: str, message: str) -> None:
        self.by_field.setdefault(name, []).append(message)


def _is_number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _check_text(errors: _Errors, fields: Mapping[str, Any], name: str, maximum: int, *, required: bool) -> None:
    value = fields.get(name)
    if value is None:
        if required:
            errors.add(name, "is required")
        return
    if not isinstance(value, str) or not value.strip() or len(value) > maximum:
        errors.add(name, f"must be text of 1–{maximum} characters, not blank")


def _check_metadata(errors: _Errors, value: Any) -> None:
    if not isinstance(value, Mapping):
        errors.add("metadata", "must be a JSON object")
        return
    if len(value) > MAX_METADATA_KEYS:
        errors.add("metadata", f"has {len(value)} keys; at most {MAX_METADATA_KEYS}")
        return
    try:
        size = len(json.dumps(value, ensure_ascii=False, allow_nan=False).encode())
    except (TypeError, ValueError):
        errors.add("metadata", "must hold JSON values only (no NaN or Infinity)")
        return
    if size > MAX_METADATA_BYTES:
        errors.add("metadata", f"is {size:,} bytes as JSON; at most {MAX_METADATA_BYTES:,}")


def _count_positions(coordinates: Any) -> int:
    """Positions in nested GeoJSON coordinates, counted without recursion (a position is a list of numbers)."""
    count = 0
    stack = [coordinates]
    while stack:
        value = stack.pop()
        if not isinstance(value, list):
            continue
        if value and not isinstance(value[0], list):
            count += 1
        else:
            stack.extend(value)
    return count


def _check_shape(errors: _Errors, fields: Mapping[str, Any]) -> str | None:
    """The kind the shape fields describe (None when they do not describe one), naming what is wrong."""
    has_center, has_geometry = fields.get("center") is not None, fields.get("geometry") is not None
    kind = fields.get("type")
    if kind is not None and kind not in KINDS:
        errors.add("type", f"must be one of {', '.join(KINDS)}")
        kind = None
    if has_center and has_geometry:
        errors.add("geometry", "give either center + radius_m (a circle) or geometry (a Polygon or MultiPolygon), "
                               "not both")
        return None
    if not has_center and not has_geometry:
        missing = "center" if kind == "circle" else "geometry"
        errors.add(missing, "is required: give center + radius_m (a circle) or geometry (a Polygon or MultiPolygon)")
        return None
    shape = "circle" if has_center else "polygon"
    if kind is not None and kind != shape:
        errors.add("type", f"is {kind}, but the fields describe a {shape}")
    if shape == "circle" and fields.get("radius_m") is None:
        errors.add("radius_m", "is required for a circle")
    if shape == "polygon" and fields.get("radius_m") is not None:
        errors.add("radius_m", "only a circle (center) has a radius")
    if shape == "polygon":
        geometry = fields["geometry"]
        coordinates = geometry.get("coordinates") if isinstance(geometry, Mapping) else None
        positions = _count_positions(coordinates)
        if positions > LIMITS.max_vertices:
            # Counted before any geometry is built: a huge polygon costs nothing to refuse.
            errors.add("geometry", f"has {positions:,} vertices; the limit is {LIMITS.max_vertices:,}")
    return shape


def _check_plain_fields(errors: _Errors, fields: Mapping[str, Any]) -> None:
    _check_text(errors, fields, "name", MAX_NAME_LENGTH, required=True)
    _check_text(errors, fields, "tag", MAX_TAG_LENGTH, required=False)
    _check_text(errors, fields, "schedule", MAX_SCHEDULE_LENGTH, required=False)
    if fields.get("metadata") is not None:
        _check_metadata(errors, fields["metadata"])
    zone = fields.get("time_zone")
    if zone is not None and not (isinstance(zone, str) and is_valid_time_zone(zone)):
        errors.add("time_zone", "is not an IANA time zone such as 'Europe/Berlin'")
    country = fields.get("country")
    if country is not None and country not in holiday_countries():
        errors.add("country", "is not an ISO 3166-1 alpha-2 code whose public holidays are known (e.g. DE, FR)")
    dwell = fields.get("dwell_s")
    if dwell is not None and (type(dwell) is not int or not 0 <= dwell <= LIMITS.max_dwell_s):
        errors.add("dwell_s", f"must be a whole number of seconds from 0 to {LIMITS.max_dwell_s:.0f}")
    hysteresis = fields.get("hysteresis_m")
    if hysteresis is not None and not (_is_number(hysteresis) and 0 <= hysteresis <= LIMITS.max_hysteresis_m):
        errors.add("hysteresis_m", f"must be a number of metres from 0 to {LIMITS.max_hysteresis_m:.0f}")
    if not isinstance(fields.get("enabled", True), bool):
        errors.add("enabled", "must be true or false")


def _library_input(fields: Mapping[str, Any], shape: str) -> dict[str, Any]:
    data: dict[str, Any] = {"id": "geofence", "timezone": fields.get("time_zone") or DEFAULT_TIME_ZONE}
    if shape == "circle":
        data["center"] = fields["center"]
    else:
        data["geometry"] = fields["geometry"]
    for name in ("radius_m", "schedule", "country", "dwell_s", "hysteresis_m", "tag", "metadata"):
        if fields.get(name) is not None:
            data[name] = fields[name]
    return data


def _check_extent(errors: _Errors, fence: Geofence, service_area: tuple[float, float, float, float] | None) -> None:
    min_lon, min_lat, max_lon, max_lat = fence.geometry.bounds
    where = "center" if fence.is_circle else "geometry"
    if not fence.is_circle and (max_lat - min_lat > MAX_SPAN_DEG or max_lon - min_lon > MAX_SPAN_DEG):
        errors.add("geometry", f"spans {max_lat - min_lat:.2f}° of latitude and {max_lon - min_lon:.2f}° of "
                               f"longitude; a geofence may span at most {MAX_SPAN_DEG:g}° each way (about 200 km)")
    if service_area is not None:
        west, south, east, north = service_area
        if min_lon < west or max_lon > east or min_lat < south or max_lat > north:
            errors.add(where, f"lies outside the service area ({west:g},{south:g},{east:g},{north:g} as "
                              "min_lon,min_lat,max_lon,max_lat)")


def _as_lists(value: Any) -> Any:
    """shapely's ``mapping`` nests tuples; JSON columns and comparisons want lists."""
    if isinstance(value, (tuple, list)):
        return [_as_lists(item) for item in value]
    if isinstance(value, dict):
        return {key: _as_lists(item) for key, item in value.items()}
    return value


def validate_geofence(fields: Mapping[str, Any], *,
                      service_area: tuple[float, float, float, float] | None = None) -> ValidGeofence:
    """The fence ``fields`` (API names) describe, or :class:`GeofenceRejected` naming every wrong field.

    Absent optional fields take their defaults (``time_zone`` UTC,
    ``hysteresis_m`` 20, ``enabled`` true, ``metadata`` {}).
    """
    errors = _Errors()
    unknown = sorted(set(fields) - set(FIELDS))
    for name in unknown:
        errors.add(name, "unknown field")
    shape = _check_shape(errors, fields)
    _check_plain_fields(errors, fields)
    if shape is None or "geometry" in errors.by_field:
        raise GeofenceRejected(errors.by_field)
    try:
        # Run even when other fields are wrong, so that one answer names every field; a field
        # already named above is not named twice.
        fence, issues = parse_geofence(_library_input(fields, shape), limits=LIMITS)
    except GeofenceInvalid as exc:
        named = set(errors.by_field)
        for issue in exc.issues:
            name = _API_NAMES.get(issue.field, issue.field)
            if name not in named:
                errors.add(name, issue.message)
        raise GeofenceRejected(errors.by_field) from None
    if errors.by_field:
        raise GeofenceRejected(errors.by_field)
    _check_extent(errors, fence, service_area)
    if errors.by_field:
        raise GeofenceRejected(errors.by_field)
    notes = [{"field": _API_NAMES.get(i.field, i.field), "message": i.message} for i in issues if i.level != ERROR]
    vertices = 0 if fence.is_circle else int(shapely.get_num_coordinates(fence.geometry))
    normalized = {
        "name": fields["name"].strip(), "tag": fields.get("tag"), "metadata": dict(fields.get("metadata") or {}),
        "schedule": fields.get("schedule"), "time_zone": fence.timezone, "country": fields.get("country"),
        "dwell_s": fields.get("dwell_s"), "enabled": fields.get("enabled", True),
        "hysteresis_m": float(fields["hysteresis_m"]) if fields.get("hysteresis_m") is not None
        else DEFAULT_HYSTERESIS_M,
    }
    return ValidGeofence(fence=fence, kind=shape, geometry=_as_lists(mapping(fence.geometry)), radius_m=fence.radius_m,
                         vertices=vertices, notes=notes, fields=normalized)
