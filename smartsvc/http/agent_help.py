"""Help cases for support agents (API keys with role ``agent``): ``/v1/help`` — the queue, a case, answer, close.

The queue shows nothing about the user; opening a case (read, answer or
close) shows everything it carries and is written to the user's sharing
ledger the first time each agent key sees it. An answer may carry
guidance for the app (``{"screen", "highlight"}``) and is pushed to the user.
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import current_app
from flask.views import MethodView

from ..models import HELP_STATUSES
from ..services import help as help_cases
from .api import Blueprint, current_principal
from .fields import not_blank
from .help import GuidanceSchema, HelpCaseSchema, MetricsSchema
from .pagination import ListArgs, decode_cursor, page_body, page_schema

blp = Blueprint("agent_help", __name__, url_prefix="/v1/help",
                description="Help cases for support agents: the queue, the case with the user's context, "
                            "answers with guidance, closing")


class QueueArgs(ListArgs):
    status = ma.fields.String(load_default=None, validate=ma.validate.OneOf(HELP_STATUSES), metadata={
        "description": "Only cases with this status (open: waiting for an agent)"})


class QueueItemSchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    status = ma.fields.String(required=True, validate=ma.validate.OneOf(HELP_STATUSES))
    created_at = ma.fields.DateTime(required=True)
    updated_at = ma.fields.DateTime(required=True)
    waiting_since = ma.fields.DateTime(required=True, metadata={
        "description": "When the user last wrote (or opened it)"})
    closed_at = ma.fields.DateTime(required=True, allow_none=True)
    metrics = ma.fields.Nested(MetricsSchema, required=True)


class AgentCaseSchema(HelpCaseSchema):
    user_id = ma.fields.UUID(required=True)


class AnswerSchema(ma.Schema):
    text = ma.fields.String(required=True, validate=[
        ma.validate.Length(min=1, max=help_cases.MAX_TEXT_CHARS), not_blank()])
    guidance = ma.fields.Nested(GuidanceSchema, load_default=None, allow_none=True, metadata={
        "description": "Where the app should lead the user: a screen and, optionally, what to highlight on it"})


class CaseUpdateSchema(ma.Schema):
    status = ma.fields.String(required=True, validate=ma.validate.OneOf(["closed"]), metadata={
        "description": "closed: the case is solved (closing it again changes nothing); the user reopens it by "
                       "writing, an agent by answering"})


def _database() -> Any:
    return current_app.extensions["smartsvc"].database


def _key_id() -> Any:
    key_id = current_principal().key_id
    assert key_id is not None
    return key_id


def _body(view: help_cases.CaseView) -> dict[str, Any]:
    return help_cases.case_body(view, for_agent=True)


@blp.route("")
class AgentHelpCases(MethodView):
    @blp.auth("agent")
    @blp.arguments(QueueArgs, location="query")
    @blp.response(200, page_schema(QueueItemSchema, "HelpQueuePageSchema"))
    def get(self, args):
        """Help cases, oldest first, optionally of one status (nothing about the user until one is opened)"""
        page = help_cases.list_queue(_database(), status=args["status"], limit=args["limit"],
                                     cursor=decode_cursor(args["cursor"]))
        return page_body(page, help_cases.queue_body)


@blp.route("/<uuid:case_id>")
class AgentHelpCaseById(MethodView):
    @blp.auth("agent")
    @blp.response(200, AgentCaseSchema)
    def get(self, case_id):
        """A case with the user's context (products, telemetry, screen, recent suggestions and interactions)"""
        return _body(help_cases.agent_read(_database(), _key_id(), case_id))

    @blp.auth("agent")
    @blp.arguments(CaseUpdateSchema)
    @blp.response(200, AgentCaseSchema)
    def patch(self, data, case_id):
        """Close the case as solved (``{"status": "closed"}``); the messages until solved are recorded"""
        return _body(help_cases.agent_close(_database(), _key_id(), case_id))


@blp.route("/<uuid:case_id>/messages")
class AgentHelpCaseMessages(MethodView):
    @blp.auth("agent")
    @blp.arguments(AnswerSchema)
    @blp.response(201, AgentCaseSchema)
    @blp.alt_response(409, response="CONFLICT")
    def post(self, data, case_id):
        """Answer the user (pushed to their devices), optionally with guidance for the app; returns the case"""
        view = help_cases.agent_answer(_database(), _key_id(), case_id, data["text"], guidance=data["guidance"])
        return _body(view)
