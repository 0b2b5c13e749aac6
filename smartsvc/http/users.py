"""Users (created by the app vendor's server) and the caller's own profile."""

from __future__ import annotations

import uuid
from typing import Any

import marshmallow as ma
from flask import current_app
from flask.views import MethodView

from ..services import users
from .api import Blueprint, current_user_id
from .fields import JsonInteger
from .idempotency import idempotent
from .pagination import ListArgs, decode_cursor, page_body, page_schema

blp = Blueprint("users", __name__, url_prefix="/v1", description="Users, tokens and the caller's profile")

HHMM = ma.validate.Regexp(r"^([01]\d|2[0-3]):[0-5]\d$", error="must be a time HH:MM (00:00–23:59)")
LOCALE = ma.validate.Regexp(
    r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$", error="must be a BCP 47 language tag such as 'de-DE'"
)


# No JSON Schema keyword lists the IANA zones portably: a named format says it.
TIME_ZONE = {"format": "iana-time-zone", "description": "An IANA time zone name", "example": "Europe/Berlin"}


def _container() -> Any:
    return current_app.extensions["smartsvc"]


class UserCreateSchema(ma.Schema):
    external_id = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=200))
    time_zone = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=64), metadata=TIME_ZONE)
    locale = ma.fields.String(load_default=None, allow_none=True, validate=LOCALE, metadata={"example": "de-DE"})


class TokenSchema(ma.Schema):
    id = ma.fields.UUID(required=True, metadata={"description": "The user's id"})
    access_token = ma.fields.String(required=True)
    token_type = ma.fields.String(required=True, metadata={"example": "Bearer"})
    expires_in = ma.fields.Integer(required=True, metadata={"description": "Seconds until it expires"})


class UserSchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    external_id = ma.fields.String(required=True)
    time_zone = ma.fields.String(required=True, metadata=TIME_ZONE)
    locale = ma.fields.String(allow_none=True, required=True)
    created_at = ma.fields.DateTime(required=True)


class UserListArgs(ListArgs):
    external_id = ma.fields.String(load_default=None, validate=ma.validate.Length(min=1, max=200))


class QuietHoursSchema(ma.Schema):
    start = ma.fields.String(required=True, validate=HHMM, metadata={"example": "22:00"})
    end = ma.fields.String(required=True, validate=HHMM, metadata={"example": "07:00"})


class MeSchema(UserSchema):
    quiet_hours = ma.fields.Nested(QuietHoursSchema, allow_none=True, required=True)
    max_pushes_per_day = ma.fields.Integer(required=True)
    updated_at = ma.fields.DateTime(required=True)


class MePatchSchema(ma.Schema):
    # A change needs something to change (an empty or missing body is a client bug).
    OPENAPI_EXTRA = {"minProperties": 1}

    time_zone = ma.fields.String(validate=ma.validate.Length(min=1, max=64), metadata=TIME_ZONE)
    locale = ma.fields.String(allow_none=True, validate=LOCALE)
    quiet_hours = ma.fields.Nested(QuietHoursSchema, allow_none=True)
    max_pushes_per_day = JsonInteger(validate=ma.validate.Range(min=0, max=50))

    @ma.validates_schema
    def _not_empty(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if not data:
            raise ma.ValidationError(f"send at least one of: {', '.join(self.fields)}", field_name="body")


def _token_body(issued: users.IssuedToken) -> dict[str, Any]:
    return {"id": issued.user.id, "access_token": issued.access_token, "token_type": "Bearer",
            "expires_in": issued.expires_in}


def _fresh_token(stored: dict[str, Any]) -> dict[str, Any]:
    issued = users.issue_token(_container().database, _container().tokens, uuid.UUID(stored["id"]))
    return {**stored, "access_token": issued.access_token, "expires_in": issued.expires_in}


def me_body(user: Any) -> dict[str, Any]:
    """The profile as ``GET /v1/me`` shows it."""
    quiet = None
    if user.quiet_hours_start and user.quiet_hours_end:
        quiet = {"start": user.quiet_hours_start, "end": user.quiet_hours_end}
    return {
        "id": user.id, "external_id": user.external_id, "time_zone": user.time_zone, "locale": user.locale,
        "quiet_hours": quiet, "max_pushes_per_day": user.max_pushes_per_day,
        "created_at": user.created_at, "updated_at": user.updated_at,
    }


@blp.route("/users")
class Users(MethodView):
    @blp.auth("app", "operator")
    @idempotent(secret_fields=("access_token",), replay=_fresh_token)
    @blp.arguments(UserCreateSchema)
    @blp.response(201, TokenSchema)
    @blp.alt_response(409, response="CONFLICT")
    def post(self, data):
        """Create a user and get their first access token"""
        issued = users.create_user(_container().database, _container().tokens, **data)
        return _token_body(issued)

    @blp.auth("app", "operator")
    @blp.arguments(UserListArgs, location="query")
    @blp.response(200, page_schema(UserSchema, "UserPageSchema"))
    def get(self, args):
        """List users, or find one by external_id"""
        page = users.list_users(_container().database, external_id=args["external_id"],
                                limit=args["limit"], cursor=decode_cursor(args["cursor"]))
        return page_body(page)


@blp.route("/users/<uuid:user_id>")
class UserById(MethodView):
    @blp.auth("app", "operator")
    @blp.response(200, UserSchema)
    def get(self, user_id):
        """Read a user"""
        return users.get_user(_container().database, user_id)


@blp.route("/users/<uuid:user_id>/tokens")
class UserTokens(MethodView):
    @blp.auth("app", "operator")
    @blp.response(201, TokenSchema)
    def post(self, user_id):
        """Issue a fresh access token for a user"""
        return _token_body(users.issue_token(_container().database, _container().tokens, user_id))


@blp.route("/me")
class Me(MethodView):
    @blp.auth("user")
    @blp.response(200, MeSchema)
    def get(self):
        """The caller's profile"""
        return me_body(users.get_user(_container().database, current_user_id()))

    @blp.auth("user")
    @blp.arguments(MePatchSchema)
    @blp.response(200, MeSchema)
    def patch(self, changes):
        """Change time zone, locale, quiet hours or the daily push budget"""
        return me_body(users.update_profile(_container().database, current_user_id(), changes))
