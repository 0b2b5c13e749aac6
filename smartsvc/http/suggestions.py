"""The caller's suggestions: the inbox (everything, pushed or not, with why), one with its pushes, and feedback.

Feedback rules per status are in :mod:`smartsvc.services.suggestion_feedback`:
snoozing a suggestion that is expired, suppressed, accepted or dismissed, and
accepting an expired one, are 409; everything else is 200 with the suggestion.
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import current_app
from flask.views import MethodView

from ..models import DELIVERY_STATUSES, SUGGESTION_STATUSES, Suggestion
from ..services import suggestion_feedback, suggestions
from ..services.suggestions import SuggestionView
from .api import Blueprint, current_user_id
from .fields import JsonInteger
from .pagination import ListArgs, decode_cursor, page_body, page_schema

blp = Blueprint("suggestions", __name__, url_prefix="/v1/me/suggestions",
                description="Suggestions: the inbox, why each was made, whether it was pushed, and feedback")


class SuggestionSchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    kind = ma.fields.String(required=True, metadata={"description": "The recipe that made it"})
    title = ma.fields.String(required=True)
    body = ma.fields.String(required=True)
    payload = ma.fields.Dict(required=True, metadata={"description": "The recipe's data (e.g. the spots)"})
    reason = ma.fields.Dict(required=True, metadata={
        "description": 'Why it was made: {"rule": {"id", "name"}, "trigger": {"event", "at", "fields"}, '
                       '"facts": {fact: value}}'})
    rule_id = ma.fields.UUID(required=True, allow_none=True)
    trigger_id = ma.fields.UUID(required=True, allow_none=True)
    collapse_key = ma.fields.String(required=True, metadata={
        "description": "A newer suggestion with the same key replaces this one"})
    status = ma.fields.String(required=True, validate=ma.validate.OneOf(SUGGESTION_STATUSES))
    status_reason = ma.fields.String(required=True, allow_none=True, metadata={
        "description": "Why it has this status, e.g. why it was not pushed (suppressed) or what it waits for"})
    created_at = ma.fields.DateTime(required=True)
    expires_at = ma.fields.DateTime(required=True)
    deliver_after = ma.fields.DateTime(required=True, allow_none=True, metadata={
        "description": "Set while it waits for the end of quiet hours"})
    snoozed_until = ma.fields.DateTime(required=True, allow_none=True)
    delivery_status = ma.fields.String(required=True, validate=ma.validate.OneOf(DELIVERY_STATUSES), metadata={
        "description": "pending (not pushed yet, or retries to come), delivered (a device got it), "
                       "failed (none did, and no retry is left), none (not pushed: suppressed, or no active device)"})
    delivered_at = ma.fields.DateTime(required=True, allow_none=True)


class PushAttemptSchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    device_id = ma.fields.UUID(required=True)
    platform = ma.fields.String(required=True)
    round = ma.fields.Integer(required=True, metadata={"description": "0, then +1 for each push after a snooze"})
    try_number = ma.fields.Integer(required=True, metadata={
        "description": "1 for the first try to this device in the round, +1 for each retry"})
    provider = ma.fields.String(required=True, metadata={"description": "log, fcm, apns or webpush"})
    status = ma.fields.String(required=True, validate=ma.validate.OneOf(("sending", "sent", "failed")))
    error = ma.fields.String(required=True, allow_none=True)
    status_code = ma.fields.Integer(required=True, allow_none=True, metadata={
        "description": "The push service's HTTP status (null: no answer, or the log provider)"})
    latency_ms = ma.fields.Integer(required=True, allow_none=True)
    started_at = ma.fields.DateTime(required=True)
    finished_at = ma.fields.DateTime(required=True, allow_none=True)
    retry_at = ma.fields.DateTime(required=True, allow_none=True, metadata={
        "description": "Set on a failed try that will be tried again: when"})


class SuggestionDetailSchema(SuggestionSchema):
    push_attempts = ma.fields.List(ma.fields.Nested(PushAttemptSchema), required=True)


class SuggestionListArgs(ListArgs):
    status = ma.fields.String(load_default=None, validate=ma.validate.OneOf(SUGGESTION_STATUSES), metadata={
        "description": "Only suggestions with this status"})


class FeedbackSchema(ma.Schema):
    # snooze_min goes with "snoozed" only (the other actions refuse it: 422 naming snooze_min).
    OPENAPI_EXTRA = {
        "oneOf": [
            {"properties": {"action": {"type": "string", "enum": ["snoozed"]}}},
            {"properties": {"action": {"type": "string",
                                       "enum": [a for a in suggestion_feedback.ACTIONS if a != "snoozed"]}},
             "not": {"required": ["snooze_min"]}},
        ],
    }

    action = ma.fields.String(required=True, validate=ma.validate.OneOf(suggestion_feedback.ACTIONS))
    snooze_min = JsonInteger(validate=ma.validate.Range(*suggestion_feedback.SNOOZE_MIN_RANGE), metadata={
        "description": f"With action 'snoozed' only: minutes until it is pushed again "
                       f"(default {suggestion_feedback.DEFAULT_SNOOZE_MIN})"})


def suggestion_body(suggestion: Suggestion) -> dict[str, Any]:
    """A suggestion as the inbox shows it."""
    return {
        "id": suggestion.id, "kind": suggestion.kind, "title": suggestion.title, "body": suggestion.body,
        "payload": suggestion.payload, "reason": suggestion.reason, "rule_id": suggestion.rule_id,
        "trigger_id": suggestion.trigger_id, "collapse_key": suggestion.collapse_key, "status": suggestion.status,
        "status_reason": suggestion.status_reason, "created_at": suggestion.created_at,
        "expires_at": suggestion.expires_at, "deliver_after": suggestion.deliver_after,
        "snoozed_until": suggestion.snoozed_until, "delivery_status": suggestion.delivery_status,
        "delivered_at": suggestion.delivered_at,
    }


def detail_body(view: SuggestionView) -> dict[str, Any]:
    """A suggestion with its push attempts."""
    attempts = [{
        "id": a.attempt.id, "device_id": a.attempt.device_id, "platform": a.platform, "round": a.attempt.round,
        "try_number": a.attempt.try_number, "provider": a.attempt.provider, "status": a.attempt.status,
        "error": a.attempt.error, "status_code": a.attempt.status_code, "latency_ms": a.attempt.latency_ms,
        "started_at": a.attempt.started_at, "finished_at": a.attempt.finished_at, "retry_at": a.attempt.retry_at,
    } for a in view.attempts]
    return {**suggestion_body(view.suggestion), "push_attempts": attempts}


def _container() -> Any:
    return current_app.extensions["smartsvc"]


@blp.route("")
class Suggestions(MethodView):
    @blp.auth("user")
    @blp.arguments(SuggestionListArgs, location="query")
    @blp.response(200, page_schema(SuggestionSchema, "SuggestionPageSchema"))
    def get(self, args):
        """The caller's suggestions, newest first (suppressed ones too, with the reason)"""
        page = suggestions.list_suggestions(_container().database, current_user_id(), status=args["status"],
                                            limit=args["limit"], cursor=decode_cursor(args["cursor"]))
        return page_body(page, suggestion_body)


@blp.route("/<uuid:suggestion_id>")
class SuggestionById(MethodView):
    @blp.auth("user")
    @blp.response(200, SuggestionDetailSchema)
    def get(self, suggestion_id):
        """One suggestion with why it was made, its delivery status and its push attempts"""
        return detail_body(suggestions.get_suggestion(_container().database, current_user_id(), suggestion_id))


@blp.route("/<uuid:suggestion_id>/feedback")
class SuggestionFeedback(MethodView):
    @blp.auth("user")
    @blp.arguments(FeedbackSchema)
    @blp.response(200, SuggestionDetailSchema)
    @blp.alt_response(409, response="CONFLICT")
    def post(self, data, suggestion_id):
        """Opened, accepted, dismissed or snoozed (snooze_min 5–1440, default 60); returns the suggestion"""
        container = _container()
        view = suggestion_feedback.give_feedback(
            container.database, current_user_id(), suggestion_id, data["action"],
            snooze_min=data.get("snooze_min"), mute_after=container.settings.mute_after_dismissals)
        return detail_body(view)
