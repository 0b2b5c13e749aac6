"""The caller's push devices."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import current_app
from flask.views import MethodView

from ..models import DEVICE_PLATFORMS
from ..services import devices
from .api import Blueprint, current_user_id
from .fields import JsonInteger
from .idempotency import idempotent
from .pagination import ListArgs, decode_cursor, page_body, page_schema

blp = Blueprint("devices", __name__, url_prefix="/v1/me/devices", description="Push devices")


class WebPushKeysSchema(ma.Schema):
    p256dh = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=200))
    auth = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=100))


# An https URL on a DNS name (what push services hand out), stated as a pattern
# so that the document says exactly what is accepted.
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
WEBPUSH_ENDPOINT = rf"^https://{_LABEL}(\.{_LABEL})*(:[0-9]{{1,5}})?(/[!-~]*)?$"


class WebPushSubscriptionSchema(ma.Schema):
    endpoint = ma.fields.String(required=True, validate=[
        ma.validate.Length(max=2048),
        ma.validate.Regexp(WEBPUSH_ENDPOINT, error="must be an https URL such as https://push.example.com/..."),
    ], metadata={"example": "https://fcm.googleapis.com/fcm/send/dXk..."})
    keys = ma.fields.Nested(WebPushKeysSchema, required=True)
    expirationTime = JsonInteger(allow_none=True, load_default=None)


class DeviceCreateSchema(ma.Schema):
    # fcm/apns send a token, webpush a subscription, never both (null counts as absent).
    OPENAPI_EXTRA = {
        "oneOf": [
            {
                "properties": {
                    "platform": {"type": "string", "enum": [p for p in DEVICE_PLATFORMS if p != "webpush"]},
                    "token": {"type": "string"},
                    "subscription": {"type": "object", "nullable": True, "enum": [None]},
                },
                "required": ["token"],
            },
            {
                "properties": {
                    "platform": {"type": "string", "enum": ["webpush"]},
                    "token": {"type": "string", "nullable": True, "enum": [None]},
                    "subscription": {"type": "object"},
                },
                "required": ["subscription"],
            },
        ],
    }

    platform = ma.fields.String(required=True, validate=ma.validate.OneOf(DEVICE_PLATFORMS))
    token = ma.fields.String(load_default=None, allow_none=True, validate=ma.validate.Length(min=1, max=4096))
    subscription = ma.fields.Nested(WebPushSubscriptionSchema, load_default=None, allow_none=True)


class DeviceSchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    platform = ma.fields.String(required=True)
    token_hint = ma.fields.String(allow_none=True, required=True,
                                  metadata={"description": "Last characters of the token (never the whole)"})
    endpoint_origin = ma.fields.String(allow_none=True, required=True,
                                       metadata={"description": "Web Push service origin"})
    active = ma.fields.Boolean(required=True)
    deactivated_reason = ma.fields.String(allow_none=True, required=True)
    created_at = ma.fields.DateTime(required=True)
    last_seen_at = ma.fields.DateTime(required=True)


def device_body(device: Any) -> dict[str, Any]:
    """A device as the API shows it: the token masked."""
    origin = None
    if device.subscription:
        endpoint = device.subscription.get("endpoint", "")
        origin = "/".join(endpoint.split("/")[:3])
    return {
        "id": device.id, "platform": device.platform, "token_hint": devices.mask_token(device.token),
        "endpoint_origin": origin, "active": device.active, "deactivated_reason": device.deactivated_reason,
        "created_at": device.created_at, "last_seen_at": device.last_seen_at,
    }


@blp.route("")
class Devices(MethodView):
    @blp.auth("user")
    @idempotent()
    @blp.arguments(DeviceCreateSchema)
    @blp.response(201, DeviceSchema)
    @blp.alt_response(200, schema=DeviceSchema, description="Already registered (reactivated)")
    def post(self, data):
        """Register a device for pushes (the same token again returns the existing one)"""
        container = current_app.extensions["smartsvc"]
        registration = devices.register_device(
            container.database, current_user_id(), max_devices=container.settings.max_devices_per_user, **data
        )
        return device_body(registration.device), 201 if registration.created else 200

    @blp.auth("user")
    @blp.arguments(ListArgs, location="query")
    @blp.response(200, page_schema(DeviceSchema, "DevicePageSchema"))
    def get(self, args):
        """The caller's devices"""
        page = devices.list_devices(current_app.extensions["smartsvc"].database, current_user_id(),
                                    limit=args["limit"], cursor=decode_cursor(args["cursor"]))
        return page_body(page, device_body)


@blp.route("/<uuid:device_id>")
class DeviceById(MethodView):
    @blp.auth("user")
    @blp.response(204)
    def delete(self, device_id):
        """Remove a device: it gets no more pushes"""
        devices.delete_device(current_app.extensions["smartsvc"].database, current_user_id(), device_id)
