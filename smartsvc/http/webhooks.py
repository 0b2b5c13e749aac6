"""Partner webhooks (partner or operator key): endpoints, their delivery log, retry, recover, rotation, test.

Each key sees only the endpoints it registered (another key's id is 404).
The signing secret (``whsec_…``) is in the answer to the creation and to
``rotate-secret`` only. See docs/webhooks.md for verifying deliveries.
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import current_app, url_for
from flask.views import MethodView

from ..services import webhook_log, webhooks
from ..services.webhook_events import EVENT_TYPES
from ..services.webhook_delivery import message_id
from .api import Blueprint, current_principal
from .fields import JsonBoolean, JsonInteger, StorableDateTime, not_blank
from .pagination import ListArgs, decode_cursor, page_body, page_schema

blp = Blueprint("webhooks", __name__, url_prefix="/v1/webhooks",
                description="Partner webhooks: signed event deliveries (Standard Webhooks) with retries "
                            "(partner or operator key)")
ROLES = ("partner", "operator")
_EVENT_TYPE = ma.fields.String(validate=ma.validate.Length(min=1, max=64),
                               metadata={"enum": list(EVENT_TYPES), "example": "suggestion.created"})


class _WebhookFields(ma.Schema):
    url = ma.fields.String(validate=ma.validate.Length(min=1, max=webhooks.MAX_URL_LENGTH), metadata={
        "description": "Where deliveries are POSTed: https, a public address (checked now and at every send); "
                       "redirects are not followed", "example": "https://partner.example/hooks/smartsvc"})
    event_types = ma.fields.List(_EVENT_TYPE, validate=ma.validate.Length(min=1, max=len(EVENT_TYPES) * 2),
                                 metadata={"description": "The events to receive (webhook.test is always sent "
                                                          "by POST .../test)"})
    description = ma.fields.String(allow_none=True, validate=[
        ma.validate.Length(min=1, max=webhooks.MAX_DESCRIPTION_LENGTH), not_blank()])
    coordinate_decimals = JsonInteger(validate=ma.validate.Range(*webhooks.COORDINATE_DECIMALS), metadata={
        "description": "Decimals coordinates in payloads are rounded to for this endpoint (6 ≈ 11 cm, "
                       "3 ≈ 110 m, 2 ≈ 1.1 km); default 6"})


class WebhookCreateSchema(_WebhookFields):
    """A new endpoint: url and event_types at least."""

    url = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=webhooks.MAX_URL_LENGTH),
                           metadata={"description": _WebhookFields._declared_fields["url"].metadata["description"],
                                     "example": "https://partner.example/hooks/smartsvc"})
    event_types = ma.fields.List(_EVENT_TYPE, required=True,
                                 validate=ma.validate.Length(min=1, max=len(EVENT_TYPES) * 2),
                                 metadata={"description": "The events to receive"})


class WebhookChangeSchema(_WebhookFields):
    """Every field of an endpoint, none required (a PATCH)."""

    OPENAPI_EXTRA = {"minProperties": 1}

    enabled = JsonBoolean(metadata={"description": "false stops deliveries (pending ones fail); true re-enables "
                                                   "an endpoint disabled after failures"})

    @ma.validates_schema
    def _not_empty(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if not data:
            raise ma.ValidationError(f"send at least one of: {', '.join(self.fields)}", field_name="body")


class NoticeSchema(ma.Schema):
    kind = ma.fields.String(required=True, metadata={"example": "webhook.disabled"})
    message = ma.fields.String(required=True)
    at = ma.fields.DateTime(required=True)


class WebhookSchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    url = ma.fields.String(required=True)
    event_types = ma.fields.List(ma.fields.String(), required=True)
    description = ma.fields.String(required=True, allow_none=True)
    enabled = ma.fields.Boolean(required=True)
    disabled_reason = ma.fields.String(required=True, allow_none=True)
    disabled_at = ma.fields.DateTime(required=True, allow_none=True)
    coordinate_decimals = ma.fields.Integer(required=True)
    failing_since = ma.fields.DateTime(required=True, allow_none=True, metadata={
        "description": "Start of the current run of failed attempts (the endpoint is disabled after 5 days)"})
    previous_secret_expires_at = ma.fields.DateTime(required=True, allow_none=True, metadata={
        "description": "Until then the secret before the last rotation signs too (a second signature)"})
    notices = ma.fields.List(ma.fields.Nested(NoticeSchema), required=True)
    created_at = ma.fields.DateTime(required=True)
    updated_at = ma.fields.DateTime(required=True)


class WebhookSecretSchema(WebhookSchema):
    secret = ma.fields.String(required=True, metadata={
        "description": "The signing secret (whsec_…): shown this once; verify deliveries with it",
        "example": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})


class AttemptSchema(ma.Schema):
    number = ma.fields.Integer(required=True)
    status = ma.fields.String(required=True, metadata={"enum": ["sending", "succeeded", "failed"]})
    status_code = ma.fields.Integer(required=True, allow_none=True)
    latency_ms = ma.fields.Integer(required=True, allow_none=True)
    error = ma.fields.String(required=True, allow_none=True)
    started_at = ma.fields.DateTime(required=True)
    finished_at = ma.fields.DateTime(required=True, allow_none=True)
    next_retry_at = ma.fields.DateTime(required=True, allow_none=True)


class DeliverySchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    message_id = ma.fields.String(required=True, metadata={"description": "The webhook-id header (every attempt)"})
    webhook_id = ma.fields.UUID(required=True)
    event_type = ma.fields.String(required=True)
    status = ma.fields.String(required=True, metadata={"enum": list(webhook_log.DELIVERY_FILTERS)})
    status_reason = ma.fields.String(required=True, allow_none=True)
    next_attempt_at = ma.fields.DateTime(required=True, allow_none=True)
    last_status_code = ma.fields.Integer(required=True, allow_none=True)
    last_error = ma.fields.String(required=True, allow_none=True)
    payload = ma.fields.Dict(keys=ma.fields.String(), required=True, metadata={
        "description": "The body sent: {type, timestamp, data}"})
    attempts = ma.fields.List(ma.fields.Nested(AttemptSchema), required=True)
    created_at = ma.fields.DateTime(required=True)
    delivered_at = ma.fields.DateTime(required=True, allow_none=True)


class DeliveryListArgs(ListArgs):
    status = ma.fields.String(load_default=None, validate=ma.validate.OneOf(webhook_log.DELIVERY_FILTERS),
                              metadata={"description": "Only deliveries with this status"})


class RecoverSchema(ma.Schema):
    since = StorableDateTime(required=True, metadata={
        "description": "Re-send every failed delivery created at or after this time (RFC 3339 with offset)",
        "example": "2026-11-24T10:00:00+01:00"})


class RecoveredSchema(ma.Schema):
    requeued = ma.fields.Integer(required=True)
    more = ma.fields.Boolean(required=True, metadata={
        "description": "More failed deliveries are left (10,000 per call): call again"})


def webhook_body(view: webhooks.EndpointView, secret: str | None = None) -> dict[str, Any]:
    """An endpoint as the API shows it (with ``secret`` only when just issued)."""
    e = view.endpoint
    body = {"id": e.id, "url": e.url, "event_types": list(e.event_types or []), "description": e.description,
            "enabled": e.enabled, "disabled_reason": e.disabled_reason, "disabled_at": e.disabled_at,
            "coordinate_decimals": e.coordinate_decimals, "failing_since": e.failing_since,
            "previous_secret_expires_at": e.previous_secret_expires_at,
            "notices": [{"kind": n.kind, "message": n.message, "at": n.at} for n in view.notices],
            "created_at": e.created_at, "updated_at": e.updated_at}
    if secret is not None:
        body["secret"] = secret
    return body


def delivery_body(view: webhook_log.DeliveryView) -> dict[str, Any]:
    """A delivery with its attempts."""
    d = view.delivery
    return {"id": d.id, "message_id": message_id(d.id), "webhook_id": d.webhook_id, "event_type": d.event_type,
            "status": d.status, "status_reason": d.status_reason, "next_attempt_at": d.next_attempt_at,
            "last_status_code": d.last_status_code, "last_error": d.last_error, "payload": d.payload,
            "attempts": [{"number": a.number, "status": a.status, "status_code": a.status_code,
                          "latency_ms": a.latency_ms, "error": a.error, "started_at": a.started_at,
                          "finished_at": a.finished_at, "next_retry_at": a.next_retry_at} for a in view.attempts],
            "created_at": d.created_at, "delivered_at": d.delivered_at}


def _database() -> Any:
    return current_app.extensions["smartsvc"].database


def _owner() -> str:
    return current_principal().ident


LOCATION_HEADER = {"Location": {"description": "The new webhook", "schema": {"type": "string"}}}


@blp.route("")
class Webhooks(MethodView):
    @blp.auth(*ROLES)
    @blp.arguments(WebhookCreateSchema)
    @blp.response(201, WebhookSecretSchema, headers=LOCATION_HEADER)
    @blp.alt_response(409, response="CONFLICT")
    def post(self, data):
        """Register an endpoint; the answer carries its signing secret, shown this once"""
        issued = webhooks.create_webhook(_database(), _owner(), data)
        body = webhook_body(issued.view, issued.secret)
        return body, 201, {"Location": url_for("webhooks.WebhookById", webhook_id=body["id"])}

    @blp.auth(*ROLES)
    @blp.arguments(ListArgs, location="query")
    @blp.response(200, page_schema(WebhookSchema, "WebhookPageSchema"))
    def get(self, args):
        """This key's endpoints in creation order"""
        page = webhooks.list_webhooks(_database(), _owner(), limit=args["limit"],
                                      cursor=decode_cursor(args["cursor"]))
        return page_body(page, webhook_body)


@blp.route("/<uuid:webhook_id>")
class WebhookById(MethodView):
    @blp.auth(*ROLES)
    @blp.response(200, WebhookSchema)
    def get(self, webhook_id):
        """One endpoint, with why it was disabled if it was"""
        return webhook_body(webhooks.get_webhook(_database(), _owner(), webhook_id))

    @blp.auth(*ROLES)
    @blp.arguments(WebhookChangeSchema)
    @blp.response(200, WebhookSchema)
    def patch(self, changes, webhook_id):
        """Change some fields; enabled=true re-enables a disabled endpoint"""
        return webhook_body(webhooks.update_webhook(_database(), _owner(), webhook_id, changes))

    @blp.auth(*ROLES)
    @blp.response(204)
    def delete(self, webhook_id):
        """Delete an endpoint and its delivery log"""
        webhooks.delete_webhook(_database(), _owner(), webhook_id)


@blp.route("/<uuid:webhook_id>/deliveries")
class Deliveries(MethodView):
    @blp.auth(*ROLES)
    @blp.arguments(DeliveryListArgs, location="query")
    @blp.response(200, page_schema(DeliverySchema, "WebhookDeliveryPageSchema"))
    def get(self, args, webhook_id):
        """The delivery log, newest first: each delivery with its attempts and next retry"""
        page = webhook_log.list_deliveries(_database(), _owner(), webhook_id, status=args["status"],
                                           limit=args["limit"], cursor=decode_cursor(args["cursor"]))
        return page_body(page, delivery_body)


@blp.route("/<uuid:webhook_id>/deliveries/<uuid:delivery_id>/retry")
class DeliveryRetry(MethodView):
    @blp.auth(*ROLES)
    @blp.response(202, DeliverySchema)
    @blp.alt_response(409, response="CONFLICT")
    def post(self, webhook_id, delivery_id):
        """Send one delivery again now (same webhook-id)"""
        return delivery_body(webhook_log.retry_delivery(_database(), _owner(), webhook_id, delivery_id))


@blp.route("/<uuid:webhook_id>/recover")
class Recover(MethodView):
    @blp.auth(*ROLES)
    @blp.arguments(RecoverSchema)
    @blp.response(202, RecoveredSchema)
    @blp.alt_response(409, response="CONFLICT")
    def post(self, data, webhook_id):
        """Send again every delivery that failed since a time (oldest first)"""
        recovered = webhook_log.recover(_database(), _owner(), webhook_id, data["since"])
        return {"requeued": recovered.requeued, "more": recovered.more}


@blp.route("/<uuid:webhook_id>/rotate-secret")
class RotateSecret(MethodView):
    @blp.auth(*ROLES)
    @blp.response(200, WebhookSecretSchema)
    def post(self, webhook_id):
        """Issue a new secret (shown this once); the old one keeps signing for 24 h"""
        issued = webhooks.rotate_secret(_database(), _owner(), webhook_id)
        return webhook_body(issued.view, issued.secret)


@blp.route("/<uuid:webhook_id>/test")
class WebhookTest(MethodView):
    @blp.auth(*ROLES)
    @blp.response(202, DeliverySchema)
    @blp.alt_response(409, response="CONFLICT")
    def post(self, webhook_id):
        """Send a webhook.test event to this endpoint now"""
        delivery = webhooks.send_test(_database(), _owner(), webhook_id)
        return delivery_body(webhook_log.DeliveryView(delivery, []))
