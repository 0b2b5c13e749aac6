"""The user's context: batches of events from the phone in, the derived current context out (user token).

``POST /v1/me/context`` ``{"events": [...]}``: each event has ``type``,
``at`` (RFC 3339 with an offset, at most 5 minutes ahead) and its fields —
``location`` (lat, lon, accuracy_m, speed_mps?, heading?), ``activity``
(value), ``trip`` (destination {lat, lon}, product_id?, mode? — or status
"ended"), ``app`` (screen). Field errors name their path: ``events.3.lat``.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import Any

import marshmallow as ma
from flask import current_app
from flask.views import MethodView

from ..models.context import ACTIVITIES, CONTEXT_EVENT_TYPES
from ..services.context_facts import context_snapshot
from ..services.context_ingest import MAX_FUTURE_S, ingest_context
from ..timeutil import utcnow
from .api import Blueprint, current_user_id
from .fields import JsonFloat, not_blank

blp = Blueprint("context", __name__, url_prefix="/v1/me/context",
                description="The user's situation: events from the phone in, the derived current context out")

FIRST_YEAR = 1970
MAX_SCREEN_LENGTH = 200
MAX_MODE_LENGTH = 32
_AT_DOC = {"description": f"When it happened on the phone: RFC 3339 with an offset, at most "
                          f"{MAX_FUTURE_S // 60} minutes ahead of the server's clock",
           "example": "2026-11-24T10:00:00+01:00"}


def _not_far_ahead(value: Any) -> None:
    if value.year < FIRST_YEAR:
        raise ma.ValidationError(f"must be a time after {FIRST_YEAR}")
    if value > utcnow() + timedelta(seconds=MAX_FUTURE_S):
        raise ma.ValidationError(f"is more than {MAX_FUTURE_S // 60} minutes in the future")


class ContextPointSchema(ma.Schema):
    lat = JsonFloat(required=True, validate=ma.validate.Range(min=-90, max=90), metadata={"example": 52.52})
    lon = JsonFloat(required=True, validate=ma.validate.Range(min=-180, max=180), metadata={"example": 13.405})


class _EventBase(ma.Schema):
    type = ma.fields.String(required=True)
    at = ma.fields.AwareDateTime(required=True, validate=_not_far_ahead, metadata=_AT_DOC)


class ContextLocationEventSchema(_EventBase):
    lat = JsonFloat(required=True, validate=ma.validate.Range(min=-90, max=90))
    lon = JsonFloat(required=True, validate=ma.validate.Range(min=-180, max=180))
    accuracy_m = JsonFloat(required=True, validate=ma.validate.Range(min=0, max=100_000))
    speed_mps = JsonFloat(allow_none=True, validate=ma.validate.Range(min=0, max=200))
    heading = JsonFloat(allow_none=True, validate=ma.validate.Range(min=0, max=360))


class ContextActivityEventSchema(_EventBase):
    value = ma.fields.String(required=True, validate=ma.validate.OneOf(ACTIVITIES))


class ContextTripEventSchema(_EventBase):
    destination = ma.fields.Nested(ContextPointSchema)
    product_id = ma.fields.UUID(allow_none=True)
    mode = ma.fields.String(allow_none=True, validate=[ma.validate.Length(min=1, max=MAX_MODE_LENGTH), not_blank()])
    status = ma.fields.String(validate=ma.validate.OneOf(("ended",)))

    @ma.validates_schema
    def _start_or_end(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if data.get("status") == "ended":
            extra = [name for name in ("destination", "product_id", "mode") if data.get(name) is not None]
            if extra:
                raise ma.ValidationError("an ended trip has no destination, product_id or mode",
                                         field_name=extra[0])
        elif "destination" not in data:
            raise ma.ValidationError('is required to start a trip (or send "status": "ended")',
                                     field_name="destination")


class ContextAppEventSchema(_EventBase):
    screen = ma.fields.String(required=True,
                              validate=[ma.validate.Length(min=1, max=MAX_SCREEN_LENGTH), not_blank()])


EVENT_SCHEMAS: dict[str, type[ma.Schema]] = {
    "location": ContextLocationEventSchema, "activity": ContextActivityEventSchema, "trip": ContextTripEventSchema,
    "app": ContextAppEventSchema,
}
assert tuple(EVENT_SCHEMAS) == CONTEXT_EVENT_TYPES

_AT = {"type": "string", "format": "date-time", "pattern": r"^(19[7-9][0-9]|2[0-9]{3})-", **_AT_DOC}
_POINT = {"type": "object", "additionalProperties": False, "required": ["lat", "lon"],
          "properties": {"lat": {"type": "number", "minimum": -90, "maximum": 90},
                         "lon": {"type": "number", "minimum": -180, "maximum": 180}}}
_EVENT_DOC = {
    "description": "One event; its fields depend on its type",
    "oneOf": [
        {"type": "object", "additionalProperties": False, "required": ["type", "at", "lat", "lon", "accuracy_m"],
         "properties": {"type": {"type": "string", "enum": ["location"]}, "at": _AT,
                        "lat": {"type": "number", "minimum": -90, "maximum": 90},
                        "lon": {"type": "number", "minimum": -180, "maximum": 180},
                        "accuracy_m": {"type": "number", "minimum": 0, "maximum": 100_000,
                                       "description": "Horizontal accuracy, metres"},
                        "speed_mps": {"type": "number", "minimum": 0, "maximum": 200, "nullable": True},
                        "heading": {"type": "number", "minimum": 0, "maximum": 360, "nullable": True}}},
        {"type": "object", "additionalProperties": False, "required": ["type", "at", "value"],
         "properties": {"type": {"type": "string", "enum": ["activity"]}, "at": _AT,
                        "value": {"type": "string", "enum": list(ACTIVITIES)}}},
        {"type": "object", "additionalProperties": False, "required": ["type", "at", "destination"],
         "properties": {"type": {"type": "string", "enum": ["trip"]}, "at": _AT, "destination": _POINT,
                        "product_id": {"type": "string", "format": "uuid", "nullable": True,
                                       "description": "One of the user's products"},
                        "mode": {"type": "string", "minLength": 1, "maxLength": MAX_MODE_LENGTH,
                                 "pattern": r"\S", "nullable": True}}},
        {"type": "object", "additionalProperties": False, "required": ["type", "at", "status"],
         "properties": {"type": {"type": "string", "enum": ["trip"]}, "at": _AT,
                        "status": {"type": "string", "enum": ["ended"]}}},
        {"type": "object", "additionalProperties": False, "required": ["type", "at", "screen"],
         "properties": {"type": {"type": "string", "enum": ["app"]}, "at": _AT,
                        "screen": {"type": "string", "minLength": 1, "maxLength": MAX_SCREEN_LENGTH,
                                   "pattern": r"\S"}}},
    ],
}


@functools.cache
def _event_schema(kind: str) -> ma.Schema:
    """One schema instance per event type, reused: building one deep-copies its fields (~0.5 ms, 100× a batch)."""
    return EVENT_SCHEMAS[kind]()


def _number_ranges(schema: ma.Schema) -> tuple[tuple[str, float, float, bool], ...]:
    """(name, low, high, optional) of each number of ``schema``, read from the field's own ``Range``."""
    ranges = []
    for name, field in schema.fields.items():
        if name in ("type", "at"):
            continue
        [limits] = [v for v in field.validators if isinstance(v, ma.validate.Range)]
        assert limits.min_inclusive and limits.max_inclusive and field.required != field.allow_none
        ranges.append((name, limits.min, limits.max, not field.required))
    return tuple(ranges)


# A location event's numbers and their ranges (a unit test holds the shortcut to the schema's answers).
_LOCATION_NUMBERS = _number_ranges(ContextLocationEventSchema())
_LOCATION_KEYS = frozenset({"type", "at"} | {name for name, *_ in _LOCATION_NUMBERS})


def plain_location(value: dict[str, Any]) -> dict[str, Any] | None:
    """A well-formed location event loaded as its schema would load it; None for anything else.

    Phones send location events by the hundred, and the schema's field
    machinery costs ~40 µs an event. Whatever this does not accept outright
    (another type, an unknown or missing field, a string, a number out of
    range, NaN, a bad time) goes through the schema, which names the problem.
    """
    if value.get("type") != "location" or not value.keys() <= _LOCATION_KEYS:
        return None
    loaded: dict[str, Any] = {"type": "location"}
    for name, low, high, optional in _LOCATION_NUMBERS:
        if name not in value:
            if optional:
                continue
            return None
        number = value[name]
        if number is None and optional:
            loaded[name] = None
            continue
        if type(number) not in (int, float) or not low <= number <= high:  # bool is not a number; NaN fails
            return None
        loaded[name] = float(number)
    at = value.get("at")
    if type(at) is not str:
        return None
    try:
        parsed = datetime.fromisoformat(at)
    except ValueError:
        return None
    if parsed.tzinfo is None or parsed.utcoffset() is None or parsed.year < FIRST_YEAR \
            or parsed > utcnow() + timedelta(seconds=MAX_FUTURE_S):
        return None
    loaded["at"] = parsed
    return loaded


class ContextEventField(ma.fields.Field):
    """One context event, validated by the schema of its ``type`` (errors keyed by its fields)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ma.ValidationError("must be an object with type and at")
        loaded = plain_location(value)
        if loaded is not None:
            return loaded
        kind = value.get("type")
        if "type" not in value:
            raise ma.ValidationError({"type": [f"is required: one of {', '.join(CONTEXT_EVENT_TYPES)}"]})
        if not isinstance(kind, str) or kind not in EVENT_SCHEMAS:
            raise ma.ValidationError({"type": [f"must be one of {', '.join(CONTEXT_EVENT_TYPES)}"]})
        return _event_schema(kind).load(value)


class ContextBatchSchema(ma.Schema):
    events = ma.fields.List(ContextEventField(metadata=_EVENT_DOC), required=True, metadata={
        "description": "Events in any order (they are applied in at order); at most SMARTSVC_MAX_CONTEXT_EVENTS "
                       "(default 500) per batch", "maxItems": 500})

    @ma.pre_load
    def _batch_limit(self, data: Any, **_kwargs: Any) -> Any:
        limit = current_app.extensions["smartsvc"].settings.max_context_events
        if isinstance(data, dict) and isinstance(data.get("events"), list) and len(data["events"]) > limit:
            raise ma.ValidationError(f"at most {limit} events per batch; send the rest in another batch",
                                     field_name="events")
        return data


class ContextGeofenceEventSchema(ma.Schema):
    type = ma.fields.String(required=True, metadata={"enum": ["geofence.entered", "geofence.exited",
                                                              "geofence.dwelled"]})
    geofence_id = ma.fields.String(required=True)
    tag = ma.fields.String(required=True, allow_none=True)
    metadata = ma.fields.Dict(keys=ma.fields.String(), required=True)
    at = ma.fields.DateTime(required=True)
    inside_since = ma.fields.DateTime(metadata={"description": "When the stay began"})
    inside_s = ma.fields.Integer(metadata={"description": "Exits: seconds the user had been inside"})
    dwell_s = ma.fields.Integer(metadata={"description": "Dwells: seconds the user has been inside"})
    reason = ma.fields.String(metadata={"description": "Exits: left (outside) or closed (the schedule closed)"})


class ContextAcceptedSchema(ma.Schema):
    accepted = ma.fields.Integer(required=True, metadata={
        "description": "Events newly stored (duplicates of stored ones are not counted)"})
    geofence_events = ma.fields.List(ma.fields.Nested(ContextGeofenceEventSchema), required=True, metadata={
        "description": "The geofence events this batch caused, in time order"})


class ContextLocationSchema(ma.Schema):
    lat = ma.fields.Float(required=True)
    lon = ma.fields.Float(required=True)
    accuracy_m = ma.fields.Float(required=True, allow_none=True)
    speed_mps = ma.fields.Float(required=True, allow_none=True, metadata={"description": "As the phone reported it"})
    heading = ma.fields.Float(required=True, allow_none=True)
    at = ma.fields.DateTime(required=True)


class ContextActivitySchema(ma.Schema):
    value = ma.fields.String(required=True, metadata={"enum": list(ACTIVITIES)})
    at = ma.fields.DateTime(required=True)


class ContextAppStateSchema(ma.Schema):
    screen = ma.fields.String(required=True)
    at = ma.fields.DateTime(required=True)


class ContextTripSchema(ma.Schema):
    id = ma.fields.String(required=True, metadata={"description": "The trip event's id"})
    destination = ma.fields.Nested(ContextPointSchema, required=True)
    product_id = ma.fields.String(required=True, allow_none=True)
    mode = ma.fields.String(required=True, allow_none=True)
    started_at = ma.fields.DateTime(required=True)
    distance_m = ma.fields.Float(required=True, allow_none=True, metadata={
        "description": "Geodesic metres from the last location to the destination"})
    eta_s = ma.fields.Integer(required=True, allow_none=True, metadata={
        "description": "Seconds to the destination at the recent speed (null when still or unknown)"})
    eta = ma.fields.DateTime(required=True, allow_none=True, metadata={
        "description": "Estimated arrival: the last location's time plus eta_s"})


class ContextInsideGeofenceSchema(ma.Schema):
    geofence_id = ma.fields.String(required=True)
    tag = ma.fields.String(required=True, allow_none=True)
    metadata = ma.fields.Dict(keys=ma.fields.String(), required=True)
    since = ma.fields.DateTime(required=True)
    dwelled = ma.fields.Boolean(required=True)


class ContextTelemetryValueSchema(ma.Schema):
    value = ma.fields.Raw(required=True)
    at = ma.fields.DateTime(required=True)


class ContextProductSchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    nickname = ma.fields.String(required=True, allow_none=True)
    model_id = ma.fields.UUID(required=True)
    kind = ma.fields.String(required=True)
    brand = ma.fields.String(required=True)
    name = ma.fields.String(required=True)
    attributes = ma.fields.Dict(keys=ma.fields.String(), required=True)
    latest_telemetry = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Nested(ContextTelemetryValueSchema),
                                      required=True)


class ContextSnapshotSchema(ma.Schema):
    location = ma.fields.Nested(ContextLocationSchema, required=True, allow_none=True, metadata={
        "description": "The last location fix"})
    speed_mps = ma.fields.Float(required=True, allow_none=True, metadata={
        "description": "Reported with the last fix, else from the last two fixes"})
    activity = ma.fields.Nested(ContextActivitySchema, required=True, allow_none=True)
    app = ma.fields.Nested(ContextAppStateSchema, required=True, allow_none=True)
    trip = ma.fields.Nested(ContextTripSchema, required=True, allow_none=True, metadata={"description": "The active trip"})
    geofences = ma.fields.List(ma.fields.Nested(ContextInsideGeofenceSchema), required=True, metadata={
        "description": "The geofences the user is inside, and since when"})
    products = ma.fields.List(ma.fields.Nested(ContextProductSchema), required=True)
    time_zone = ma.fields.String(required=True)
    local_time = ma.fields.String(required=True, metadata={"description": "HH:MM in the user's time zone"})
    weekday = ma.fields.Integer(required=True, metadata={"description": "1 (Monday) to 7 (Sunday), local"})
    last_event_at = ma.fields.DateTime(required=True, allow_none=True, metadata={
        "description": "The newest event applied"})
    updated_at = ma.fields.DateTime(required=True, allow_none=True)


def _container() -> Any:
    return current_app.extensions["smartsvc"]


@blp.route("")
class Context(MethodView):
    @blp.auth("user")
    @blp.arguments(ContextBatchSchema)
    @blp.response(202, ContextAcceptedSchema)
    def post(self, data):
        """Report context events (location needs consent 'location'); applied at once, in time order"""
        result = ingest_context(_container(), current_user_id(), data["events"])
        return {"accepted": result.accepted, "geofence_events": result.geofence_events}

    @blp.auth("user")
    @blp.response(200, ContextSnapshotSchema)
    def get(self):
        """The user's current context: location, speed, activity, trip with distance and ETA, geofences, products"""
        container = _container()
        with container.database.session() as session:
            return context_snapshot(session, container.geofence_tracker, current_user_id())
