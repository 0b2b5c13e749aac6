"""Consent per purpose, with its history."""

from __future__ import annotations

import marshmallow as ma
from flask import current_app
from flask.views import MethodView

from ..models import CONSENT_PURPOSES
from ..services import consents
from .api import Blueprint, current_user_id
from .fields import JsonBoolean

blp = Blueprint("consents", __name__, url_prefix="/v1/me/consents", description="Consent per purpose")


class ConsentChangeSchema(ma.Schema):
    granted = ma.fields.Boolean(required=True)
    at = ma.fields.DateTime(required=True)


class ConsentSchema(ma.Schema):
    purpose = ma.fields.String(required=True, validate=ma.validate.OneOf(CONSENT_PURPOSES))
    granted = ma.fields.Boolean(required=True)
    changed_at = ma.fields.DateTime(allow_none=True, required=True)
    history = ma.fields.List(ma.fields.Nested(ConsentChangeSchema), required=True)


class ConsentListSchema(ma.Schema):
    items = ma.fields.List(ma.fields.Nested(ConsentSchema), required=True)


class ConsentPutSchema(ma.Schema):
    granted = JsonBoolean(required=True)


@blp.route("")
class Consents(MethodView):
    @blp.auth("user")
    @blp.response(200, ConsentListSchema)
    def get(self):
        """Every purpose: granted or not, since when, and the history of changes"""
        return {"items": consents.list_consents(current_app.extensions["smartsvc"].database, current_user_id())}


@blp.route(f"/<any({', '.join(CONSENT_PURPOSES)}):purpose>")
class ConsentByPurpose(MethodView):
    @blp.auth("user")
    @blp.arguments(ConsentPutSchema)
    @blp.response(200, ConsentSchema)
    def put(self, data, purpose):
        """Grant or withdraw one purpose (location, telemetry, proactive_push, partner_sharing)"""
        return consents.set_consent(
            current_app.extensions["smartsvc"].database, current_user_id(), purpose, data["granted"]
        )
