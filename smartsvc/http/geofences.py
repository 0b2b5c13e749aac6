"""Geofences (operator): circles and Polygon / MultiPolygon areas that users' locations enter, leave and dwell in.

Request body (create): ``name``, then either a circle — ``center``
{lat, lon} and ``radius_m`` (10–10,000 m) — or an area — ``geometry``, a
GeoJSON Polygon or MultiPolygon with holes allowed, up to 10,000 vertices —
and optionally ``type`` (``circle`` | ``polygon``, must agree), ``tag``,
``metadata``, ``schedule``, ``time_zone``, ``country``, ``dwell_s``,
``hysteresis_m``, ``enabled``. A change (PATCH) sends any of these; the shape
is replaced as a whole (``center`` with ``radius_m``, or ``geometry``) and
the changed fence is validated as a whole. All operator keys share one set of
geofences.
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import current_app, url_for
from flask.views import MethodView

from geodata.validate import opening_hours_error

from ..models import GeofenceRecord
from ..services import geofences
from ..services.geofence_input import (
    DEFAULT_TIME_ZONE, KINDS, LIMITS, MAX_METADATA_BYTES, MAX_METADATA_KEYS, MAX_NAME_LENGTH, MAX_SCHEDULE_LENGTH,
    MAX_SPAN_DEG, MAX_TAG_LENGTH, holiday_countries,
)
from ..timeutil import is_valid_time_zone
from .api import Blueprint, current_principal
from .fields import JsonBoolean, JsonFloat, JsonInteger, not_blank
from .geojson import GeometrySchema
from .idempotency import idempotent
from .pagination import ListArgs, decode_cursor, page_body, page_schema
from .uploads import large_body
from .users import TIME_ZONE

blp = Blueprint("geofences", __name__, url_prefix="/v1/geofences",
                description="Geofences: circles and areas whose entering, leaving and dwelling become context "
                            "events (operator)")

_POSITION = {"type": "array", "minItems": 2, "maxItems": 3, "items": {"type": "number"},
             "description": "[longitude, latitude] (WGS 84); an altitude is ignored"}
_RING = {"type": "array", "minItems": 4, "maxItems": LIMITS.max_vertices, "items": _POSITION,
         "description": "A linear ring: the first position repeated last (an unclosed ring is closed)"}
_POLYGON_RINGS = {"type": "array", "minItems": 1, "items": _RING,
                  "description": "The outer ring, then any holes"}
_AREA_TYPES = ("Polygon", "MultiPolygon")


class AreaGeometry(ma.fields.Field):
    """A GeoJSON Polygon or MultiPolygon, checked for its JSON structure (the area itself is judged later)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ma.ValidationError("must be a GeoJSON Polygon or MultiPolygon object")
        unknown = sorted(set(value) - {"type", "coordinates"})
        if unknown:
            raise ma.ValidationError(f"unknown member(s) {', '.join(unknown)}: a geometry has type and coordinates")
        kind = value.get("type")
        if kind not in _AREA_TYPES:
            raise ma.ValidationError(f"type must be Polygon or MultiPolygon (a circle is center + radius_m), "
                                     f"not {str(kind)[:50]!r}")
        if "coordinates" not in value:
            raise ma.ValidationError("coordinates are required")
        coordinates = value["coordinates"]
        polygons = [coordinates] if kind == "Polygon" else coordinates
        if kind == "MultiPolygon" and (not isinstance(polygons, list) or not polygons):
            raise ma.ValidationError("a MultiPolygon's coordinates are a non-empty array of polygons")
        for polygon in polygons:
            _check_rings(polygon)
        return value


def _check_rings(rings: Any) -> None:
    if not isinstance(rings, list) or not rings:
        raise ma.ValidationError("a polygon's coordinates are a non-empty array of rings")
    for ring in rings:
        if not isinstance(ring, list) or not 4 <= len(ring) <= LIMITS.max_vertices:
            raise ma.ValidationError(f"a ring is an array of 4 to {LIMITS.max_vertices:,} positions "
                                     "(the first repeated last)")
        for position in ring:
            if (not isinstance(position, list) or not 2 <= len(position) <= 3
                    or any(type(number) not in (int, float) for number in position)):
                raise ma.ValidationError("a position is [longitude, latitude] (numbers), optionally with an "
                                         f"altitude; got {str(position)[:60]}")


_GEOMETRY_DOC = {
    "description": "A GeoJSON Polygon or MultiPolygon (RFC 7946: [lon, lat], WGS 84), holes allowed, up to "
                   f"{LIMITS.max_vertices:,} vertices and {MAX_SPAN_DEG:g}° across. An invalid polygon "
                   "is repaired when that changes its area by under 1 % (see notes), otherwise rejected; "
                   "overlapping MultiPolygon parts are merged.",
    "oneOf": [
        {"type": "object", "additionalProperties": False, "required": ["type", "coordinates"],
         "properties": {"type": {"type": "string", "enum": ["Polygon"]}, "coordinates": _POLYGON_RINGS}},
        {"type": "object", "additionalProperties": False, "required": ["type", "coordinates"],
         "properties": {"type": {"type": "string", "enum": ["MultiPolygon"]},
                        "coordinates": {"type": "array", "minItems": 1, "items": _POLYGON_RINGS}}},
    ],
    "example": {"type": "Polygon", "coordinates": [[[13.40, 52.51], [13.41, 52.51], [13.41, 52.52],
                                                    [13.40, 52.52], [13.40, 52.51]]]},
}


def check_time_zone(value: str) -> None:
    """A marshmallow validator: an IANA time zone name."""
    if not is_valid_time_zone(value):
        raise ma.ValidationError("is not an IANA time zone such as 'Europe/Berlin'")


def _check_schedule(value: str) -> None:
    problem = opening_hours_error(value)
    if problem:
        raise ma.ValidationError(f"is not an OSM opening_hours expression ({problem}), e.g. 'Mo-Fr 08:00-18:00'")


class CenterSchema(ma.Schema):
    lat = JsonFloat(required=True, validate=ma.validate.Range(min=-90, max=90), metadata={"example": 52.52})
    lon = JsonFloat(required=True, validate=ma.validate.Range(min=-180, max=180), metadata={"example": 13.405})


class GeofenceChangeSchema(ma.Schema):
    """Every field of a geofence, none required (a PATCH)."""

    # The shape is replaced as a whole: center with radius_m, or geometry; type only with it.
    OPENAPI_EXTRA = {
        "minProperties": 1,
        "allOf": [
            {"anyOf": [
                {"properties": {"type": {"enum": ["circle"]}}, "not": {"required": ["geometry"]}},
                {"properties": {"type": {"enum": ["polygon"]}},
                 "not": {"anyOf": [{"required": ["center"]}, {"required": ["radius_m"]}]}},
            ]},
            {"anyOf": [{"required": ["center", "radius_m"]},
                       {"not": {"anyOf": [{"required": ["center"]}, {"required": ["radius_m"]}]}}]},
            {"anyOf": [{"not": {"required": ["type"]}}, {"required": ["center"]}, {"required": ["geometry"]}]},
        ],
    }

    name = ma.fields.String(validate=[ma.validate.Length(min=1, max=MAX_NAME_LENGTH), not_blank()],
                            metadata={"example": "Dealer Berlin-Mitte"})
    type = ma.fields.String(validate=ma.validate.OneOf(KINDS), metadata={
        "description": "circle (center + radius_m) or polygon (geometry); taken from the shape when left out"})
    center = ma.fields.Nested(CenterSchema, metadata={
        "description": "Centre of a circle, always with radius_m (in a change too: the shape is replaced as a whole)"})
    radius_m = JsonFloat(validate=ma.validate.Range(min=LIMITS.min_radius_m, max=LIMITS.max_radius_m),
                         metadata={"description": "Radius of a circle in metres (geodesic)", "example": 150})
    geometry = AreaGeometry(metadata=_GEOMETRY_DOC)
    tag = ma.fields.String(allow_none=True,
                           validate=[ma.validate.Length(min=1, max=MAX_TAG_LENGTH), not_blank()],
                           metadata={"description": "A label rules match on (geofence.tag) and lists filter by",
                                     "example": "dealer"})
    metadata = ma.fields.Dict(keys=ma.fields.String(), metadata={
        "description": f"Free JSON object for rules (geofence.metadata.*), at most {MAX_METADATA_KEYS} keys "
                       f"and {MAX_METADATA_BYTES // 1024} KiB as JSON; replaced as a whole by a change",
        "maxProperties": MAX_METADATA_KEYS, "example": {"dealer_id": "B-17"}})
    schedule = ma.fields.String(allow_none=True, validate=[
        ma.validate.Length(min=1, max=MAX_SCHEDULE_LENGTH), not_blank(), _check_schedule], metadata={
        "description": "OSM opening_hours: the fence exists only while open (local times in time_zone); "
                       "null or absent: always",
        "example": "Mo-Fr 08:00-18:00; Sa 09:00-13:00; PH off"})
    time_zone = ma.fields.String(validate=[ma.validate.Length(min=1, max=64), check_time_zone], metadata={
        **TIME_ZONE, "description": f"IANA time zone the schedule is read in (default {DEFAULT_TIME_ZONE})"})
    country = ma.fields.String(
        allow_none=True,
        validate=ma.validate.OneOf(holiday_countries(),
                                   error="is not an ISO 3166-1 alpha-2 code whose public holidays are known, e.g. DE"),
        metadata={"description": "ISO 3166-1 alpha-2 country whose public holidays PH in the schedule means",
                  "example": "DE"})
    dwell_s = JsonInteger(allow_none=True, validate=ma.validate.Range(min=0, max=int(LIMITS.max_dwell_s)),
                          metadata={"description": "Seconds inside before geofence.dwelled fires (once per stay); "
                                                   "null: no dwell event", "example": 300})
    hysteresis_m = JsonFloat(validate=ma.validate.Range(min=0, max=LIMITS.max_hysteresis_m), metadata={
        "description": "How far past the boundary a fix must be to enter or leave, against GPS jitter (metres; "
                       "a less precise fix widens it). Default 20"})
    enabled = JsonBoolean(metadata={"description": "A disabled fence fires nothing (default true)"})

    @ma.validates_schema
    def _not_empty(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if not data:
            raise ma.ValidationError(f"send at least one of: {', '.join(self.fields)}", field_name="body")


class GeofenceCreateSchema(GeofenceChangeSchema):
    """A new geofence: a name and a shape (circle or area) at least."""

    # A shape is required (center with radius_m, or geometry), and only one.
    OPENAPI_EXTRA = {
        "allOf": [
            *GeofenceChangeSchema.OPENAPI_EXTRA["allOf"][:2],
            {"anyOf": [{"required": ["center", "radius_m"]}, {"required": ["geometry"]}]},
        ],
    }

    name = ma.fields.String(required=True,
                            validate=[ma.validate.Length(min=1, max=MAX_NAME_LENGTH), not_blank()],
                            metadata={"example": "Dealer Berlin-Mitte"})


class NoteSchema(ma.Schema):
    field = ma.fields.String(required=True)
    message = ma.fields.String(required=True, metadata={
        "example": "a polygon ring was not closed; it was closed by repeating its first position"})


class GeofenceSchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    name = ma.fields.String(required=True)
    type = ma.fields.String(required=True, validate=ma.validate.OneOf(KINDS))
    center = ma.fields.Nested(CenterSchema, required=True, allow_none=True, metadata={
        "description": "Centre of a circle (null for a polygon)"})
    radius_m = ma.fields.Float(required=True, allow_none=True, metadata={
        "description": "Radius of a circle in metres (null for a polygon)"})
    geometry = ma.fields.Nested(GeometrySchema, required=True, metadata={
        "description": "The area as stored (after any repair), or a circle's centre as a Point"})
    vertices = ma.fields.Integer(required=True, metadata={"description": "Positions of the polygon (0: a circle)"})
    tag = ma.fields.String(required=True, allow_none=True)
    metadata = ma.fields.Dict(keys=ma.fields.String(), required=True)
    schedule = ma.fields.String(required=True, allow_none=True)
    time_zone = ma.fields.String(required=True, metadata=TIME_ZONE)
    country = ma.fields.String(required=True, allow_none=True)
    dwell_s = ma.fields.Integer(required=True, allow_none=True)
    hysteresis_m = ma.fields.Float(required=True)
    enabled = ma.fields.Boolean(required=True)
    notes = ma.fields.List(ma.fields.Nested(NoteSchema), required=True, metadata={
        "description": "What the last save repaired or ignored"})
    created_by = ma.fields.String(required=True, allow_none=True, metadata={
        "description": "The API key that created it (key:<id>)"})
    created_at = ma.fields.DateTime(required=True)
    updated_at = ma.fields.DateTime(required=True)


class GeofenceListArgs(ListArgs):
    tag = ma.fields.String(load_default=None, validate=ma.validate.Length(min=1, max=MAX_TAG_LENGTH),
                           metadata={"description": "Only fences with this tag"})
    enabled = ma.fields.Boolean(load_default=None, metadata={"description": "Only enabled (true) or disabled "
                                                                            "(false) fences"})


def geofence_body(record: GeofenceRecord) -> dict[str, Any]:
    """A geofence as the API shows it."""
    center = None
    if record.kind == "circle":
        lon, lat = record.geometry["coordinates"][:2]
        center = {"lat": lat, "lon": lon}
    return {
        "id": record.id, "name": record.name, "type": record.kind, "center": center, "radius_m": record.radius_m,
        "geometry": record.geometry, "vertices": record.vertices, "tag": record.tag,
        "metadata": record.fence_metadata or {}, "schedule": record.schedule, "time_zone": record.time_zone,
        "country": record.country, "dwell_s": record.dwell_s, "hysteresis_m": record.hysteresis_m,
        "enabled": record.enabled, "notes": record.notes or [], "created_by": record.created_by,
        "created_at": record.created_at, "updated_at": record.updated_at,
    }


def _container() -> Any:
    return current_app.extensions["smartsvc"]


def _location(body: dict[str, Any]) -> dict[str, str]:
    return {"Location": url_for("geofences.GeofenceById", geofence_id=body["id"])}


def _body_limit(settings: Any) -> int:
    return settings.max_geofence_body_bytes


LOCATION_HEADER = {"Location": {"description": "The new geofence", "schema": {"type": "string"}}}


@blp.route("")
class Geofences(MethodView):
    @blp.auth("operator")
    @large_body(_body_limit)
    @idempotent(replay_headers=_location)
    @blp.arguments(GeofenceCreateSchema)
    @blp.response(201, GeofenceSchema, headers=LOCATION_HEADER)
    @blp.alt_response(409, response="CONFLICT")
    @blp.alt_response(413, response="REQUEST_ENTITY_TOO_LARGE")
    def post(self, data):
        """Create a geofence: a circle (center + radius_m) or a Polygon / MultiPolygon area"""
        container = _container()
        record = geofences.create_geofence(container.database, container.settings, data,
                                           created_by=current_principal().ident)
        body = geofence_body(record)
        return body, 201, _location(body)

    @blp.auth("operator")
    @blp.arguments(GeofenceListArgs, location="query")
    @blp.response(200, page_schema(GeofenceSchema, "GeofencePageSchema"))
    def get(self, args):
        """Geofences in creation order, optionally by tag or enabled state (large polygons: shorter pages)"""
        page = geofences.list_geofences(_container().database, tag=args["tag"], enabled=args["enabled"],
                                        limit=args["limit"], cursor=decode_cursor(args["cursor"]))
        return page_body(page, geofence_body)


@blp.route("/<uuid:geofence_id>")
class GeofenceById(MethodView):
    @blp.auth("operator")
    @blp.response(200, GeofenceSchema)
    def get(self, geofence_id):
        """One geofence"""
        return geofence_body(geofences.get_geofence(_container().database, geofence_id))

    @blp.auth("operator")
    @large_body(_body_limit)
    @blp.arguments(GeofenceChangeSchema)
    @blp.response(200, GeofenceSchema)
    @blp.alt_response(409, response="CONFLICT")
    @blp.alt_response(413, response="REQUEST_ENTITY_TOO_LARGE")
    def patch(self, changes, geofence_id):
        """Change some fields of a geofence; the shape only as a whole; the result is validated as a whole"""
        container = _container()
        return geofence_body(geofences.update_geofence(container.database, container.settings, geofence_id,
                                                       changes))

    @blp.auth("operator")
    @blp.response(204)
    def delete(self, geofence_id):
        """Delete a geofence (users inside it get no exit event: it is gone)"""
        geofences.delete_geofence(_container().database, geofence_id)
