"""API keys, managed by operators."""

from __future__ import annotations

import marshmallow as ma
from flask import current_app
from flask.views import MethodView

from ..models import KEY_ROLES
from ..services import keys
from .api import Blueprint
from .fields import not_blank
from .pagination import ListArgs, decode_cursor, page_body, page_schema

blp = Blueprint("keys", __name__, url_prefix="/v1/keys", description="API keys (operator)")


class KeyCreateSchema(ma.Schema):
    role = ma.fields.String(required=True, validate=ma.validate.OneOf(KEY_ROLES))
    name = ma.fields.String(required=True, validate=[
        ma.validate.Length(min=1, max=200),
        not_blank(),
    ])


class KeySchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    name = ma.fields.String(required=True)
    role = ma.fields.String(required=True)
    prefix = ma.fields.String(required=True, metadata={"description": "First characters, to tell keys apart"})
    created_at = ma.fields.DateTime(required=True)
    last_used_at = ma.fields.DateTime(allow_none=True, required=True)
    revoked_at = ma.fields.DateTime(allow_none=True, required=True)


class CreatedKeySchema(KeySchema):
    key = ma.fields.String(required=True, metadata={"description": "The key itself: shown this once only"})


def _database():
    return current_app.extensions["smartsvc"].database


@blp.route("")
class Keys(MethodView):
    @blp.auth("operator")
    @blp.arguments(KeyCreateSchema)
    @blp.response(201, CreatedKeySchema)
    def post(self, data):
        """Create an API key (the key is in this response only)"""
        created = keys.create_key(_database(), data["role"], data["name"])
        key = created.key
        return {"id": key.id, "name": key.name, "role": key.role, "prefix": key.prefix,
                "created_at": key.created_at, "last_used_at": key.last_used_at,
                "revoked_at": key.revoked_at, "key": created.plaintext}

    @blp.auth("operator")
    @blp.arguments(ListArgs, location="query")
    @blp.response(200, page_schema(KeySchema, "KeyPageSchema"))
    def get(self, args):
        """All API keys (never the keys themselves)"""
        return page_body(keys.list_keys(_database(), limit=args["limit"], cursor=decode_cursor(args["cursor"])))


@blp.route("/<uuid:key_id>")
class KeyById(MethodView):
    @blp.auth("operator")
    @blp.response(200, KeySchema)
    def get(self, key_id):
        """One API key"""
        return keys.get_key(_database(), key_id)

    @blp.auth("operator")
    @blp.response(204)
    def delete(self, key_id):
        """Revoke an API key: it stops working at once"""
        keys.revoke_key(_database(), key_id)
