"""Help on demand for the user: open a case with one tap (the context is attached), read it, write to it.

The case JSON shows what the agent sees (the snapshot), the conversation
(with the agents' guidance for the app) and the effort it took
(``metrics``). The agents' side is :mod:`smartsvc.http.agent_help`.
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import current_app
from flask.views import MethodView

from ..models import HELP_AUTHORS, HELP_STATUSES
from ..services import help as help_cases
from .api import Blueprint, current_user_id
from .fields import SPACE_CLASS, not_blank
from .idempotency import idempotent
from .pagination import ListArgs, decode_cursor, page_body, page_schema

blp = Blueprint("help", __name__, url_prefix="/v1/me/help",
                description="Help on demand: a help case with the user's context attached, and its conversation")

# A name the app looks up: not blank, and no control characters (a line break in a screen name is a mistake).
NAME_PATTERN = rf"^[^\x00-\x1f\x7f]*[^{SPACE_CLASS}\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
MAX_NAME_CHARS = 200


def _text_field(**kwargs: Any) -> ma.fields.String:
    return ma.fields.String(validate=[ma.validate.Length(min=1, max=help_cases.MAX_TEXT_CHARS), not_blank()],
                            **kwargs)


def name_field(description: str, **kwargs: Any) -> ma.fields.String:
    """A short identifier-like string (a screen, a topic, a highlighted element)."""
    return ma.fields.String(validate=[ma.validate.Length(min=1, max=MAX_NAME_CHARS), ma.validate.Regexp(
        NAME_PATTERN, error="must not be blank nor contain control characters")],
                            metadata={"description": description}, **kwargs)


class HelpCreateSchema(ma.Schema):
    topic = ma.fields.String(required=True, validate=[ma.validate.Length(min=1, max=100), not_blank()],
                             metadata={"description": "What it is about, in a few words (the app may offer a "
                                                      "list: \"battery\", \"parking\", ...)"})
    message = _text_field(required=True, metadata={
        "description": f"What the user wants to say (≤ {help_cases.MAX_TEXT_CHARS} characters)"})
    screen = name_field("The app screen the user asks from (default: the last one the app reported)",
                        load_default=None, allow_none=True)
    product_id = ma.fields.UUID(load_default=None, allow_none=True, metadata={
        "description": "The product it is about (one of the user's); default: the trip's, or the only one"})


class UserMessageSchema(ma.Schema):
    text = _text_field(required=True)


class GuidanceSchema(ma.Schema):
    screen = name_field("The app screen to lead the user to", required=True)
    highlight = name_field("The element of that screen to highlight", load_default=None, allow_none=True)


class MetricsSchema(ma.Schema):
    time_to_first_answer_s = ma.fields.Float(required=True, allow_none=True, metadata={
        "description": "Seconds from opening to the first agent answer (null: not answered yet)"})
    first_answered_at = ma.fields.DateTime(required=True, allow_none=True)
    messages_until_solved = ma.fields.Integer(required=True, allow_none=True, metadata={
        "description": "Messages (user and agents) when it was closed (null: not closed)"})
    messages = ma.fields.Integer(required=True, metadata={"description": "Messages so far"})


class HelpMessageSchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    author = ma.fields.String(required=True, validate=ma.validate.OneOf(HELP_AUTHORS))
    text = ma.fields.String(required=True)
    guidance = ma.fields.Nested(GuidanceSchema, required=True, allow_none=True, metadata={
        "description": "Where the app should lead the user (agents' messages)"})
    created_at = ma.fields.DateTime(required=True)


class HelpSummarySchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    status = ma.fields.String(required=True, validate=ma.validate.OneOf(HELP_STATUSES), metadata={
        "description": "open (waiting for an agent), answered (an agent wrote last), closed (solved)"})
    topic = ma.fields.String(required=True, allow_none=True)
    screen = ma.fields.String(required=True, allow_none=True)
    product_id = ma.fields.UUID(required=True, allow_none=True)
    created_at = ma.fields.DateTime(required=True)
    updated_at = ma.fields.DateTime(required=True)
    closed_at = ma.fields.DateTime(required=True, allow_none=True)
    metrics = ma.fields.Nested(MetricsSchema, required=True)


class HelpCaseSchema(HelpSummarySchema):
    snapshot = ma.fields.Dict(required=True, metadata={
        "description": "The context when it was opened, as the agents see it: taken_at, user, product_id, "
                       "products (with latest_telemetry), screen, activity, location_shared, location and trip "
                       "(only with the location consent), suggestions (the last 5), interactions (the last 10)"})
    messages = ma.fields.List(ma.fields.Nested(HelpMessageSchema), required=True)


def _database() -> Any:
    return current_app.extensions["smartsvc"].database


@blp.route("")
class HelpCases(MethodView):
    @blp.auth("user")
    @idempotent()
    @blp.arguments(HelpCreateSchema)
    @blp.response(201, HelpCaseSchema)
    @blp.alt_response(409, response="CONFLICT")
    def post(self, data):
        """Ask for help: opens a case with the context attached (at most 5 open at once)"""
        view = help_cases.open_case(_database(), current_user_id(), **data)
        return help_cases.case_body(view)

    @blp.auth("user")
    @blp.arguments(ListArgs, location="query")
    @blp.response(200, page_schema(HelpSummarySchema, "HelpSummaryPageSchema"))
    def get(self, args):
        """The caller's help cases, newest first"""
        page = help_cases.list_user_cases(_database(), current_user_id(), limit=args["limit"],
                                          cursor=decode_cursor(args["cursor"]))
        return page_body(page, help_cases.summary_body)


@blp.route("/<uuid:case_id>")
class HelpCaseById(MethodView):
    @blp.auth("user")
    @blp.response(200, HelpCaseSchema)
    def get(self, case_id):
        """One of the caller's help cases with the conversation and what the agents see"""
        return help_cases.case_body(help_cases.get_user_case(_database(), current_user_id(), case_id))


@blp.route("/<uuid:case_id>/messages")
class HelpCaseMessages(MethodView):
    @blp.auth("user")
    @blp.arguments(UserMessageSchema)
    @blp.response(201, HelpCaseSchema)
    @blp.alt_response(409, response="CONFLICT")
    def post(self, data, case_id):
        """Write to one of the caller's cases (a closed case opens again); returns the case"""
        view = help_cases.add_user_message(_database(), current_user_id(), case_id, data["text"])
        return help_cases.case_body(view)
