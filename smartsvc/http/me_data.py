"""What the user can see of their data (TRUST.md): the interaction journal, the sharing ledger, the export."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import marshmallow as ma
from flask import Response, current_app
from flask.views import MethodView

from ..services import export, journal, sharing
from ..services.journal import JournalItem
from .api import Blueprint, current_user_id
from .fields import StorableDateTime
from .pagination import ListArgs, decode_cursor, page_body, page_schema

blp = Blueprint("me_data", __name__, url_prefix="/v1/me",
                description="Transparency: the interaction journal, the sharing ledger and the export of everything")

KIND_PATTERN = r"^[a-z_]{1,32}(\.[a-z_]{1,32})?$"


class SubjectSchema(ma.Schema):
    type = ma.fields.String(required=True, allow_none=True, metadata={
        "description": "suggestion, help_case, sharing (a sharing ledger entry), or null"})
    id = ma.fields.UUID(required=True, allow_none=True)


class InteractionSchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    kind = ma.fields.String(required=True, metadata={
        "description": "suggestion.created/pushed/opened/accepted/dismissed/snoozed, spot.searched, "
                       "help.requested/message/answered/closed, data.shared"})
    channel = ma.fields.String(required=True, metadata={
        "description": "api (the app called the service), inbox, push, webhook (sent to a partner), agent"})
    at = ma.fields.DateTime(required=True)
    subject = ma.fields.Nested(SubjectSchema, required=True)
    data = ma.fields.Dict(required=True, metadata={"description": "What happened, by kind"})
    metrics = ma.fields.Dict(required=True, allow_none=True, metadata={
        "description": "Effort of the subject. A suggestion: time_to_action_s (first opened/accepted/dismissed "
                       "after its first push, else after its creation), action, action_at, pushed_at, "
                       "measured_from. A help case: time_to_first_answer_s, messages, messages_until_solved, "
                       "solved, requested_at, first_answer_at, closed_at. Null for other touchpoints."})


class InteractionListArgs(ListArgs):
    kind = ma.fields.String(load_default=None, validate=ma.validate.Regexp(
        KIND_PATTERN, error="must be a kind (suggestion.opened) or a family of kinds (suggestion)"), metadata={
        "description": "Only this kind, or with no dot this family of kinds (e.g. suggestion, help, spot, data)"})
    since = StorableDateTime(load_default=None, metadata={
        "description": "Only touchpoints at or after this time (RFC 3339 with offset)"})


class SharingEntrySchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    at = ma.fields.DateTime(required=True, metadata={"description": "When the data left the system"})
    channel = ma.fields.String(required=True, metadata={"description": "webhook (a partner) or agent (a help case)"})
    recipient = ma.fields.String(required=True, metadata={
        "description": "Who received it: the partner key's name and the endpoint's host"})
    recipient_id = ma.fields.String(required=True, allow_none=True, metadata={
        "description": "The receiving object (the webhook endpoint's id)"})
    event_type = ma.fields.String(required=True)
    fields = ma.fields.List(ma.fields.String(), required=True, metadata={
        "description": 'Dotted paths of the fields sent, e.g. "suggestion.title"'})
    reference_id = ma.fields.String(required=True, allow_none=True, metadata={
        "description": "What was sent (the webhook delivery's id, the same the partner saw)"})


def _export_schema() -> type[ma.Schema]:
    """The export document: a head, then one section per kind of data (services/export.py)."""
    fields: dict[str, ma.fields.Field] = {
        "format": ma.fields.String(required=True, metadata={"example": export.FORMAT}),
        "exported_at": ma.fields.DateTime(required=True),
        "user_id": ma.fields.UUID(required=True),
        "sections": ma.fields.Dict(required=True, metadata={"description": "Each section of the document"}),
    }
    for section in export.SECTIONS:
        description = {"description": section.description}
        fields[section.name] = (ma.fields.List(ma.fields.Dict(), required=True, metadata=description)
                                if section.many else
                                ma.fields.Dict(required=True, allow_none=True, metadata=description))
    return ma.Schema.from_dict(fields, name="ExportSchema")


ExportSchema = _export_schema()


def _container() -> Any:
    return current_app.extensions["smartsvc"]


def _write_pending_searches(container: Any) -> None:
    # This process's searches are buffered (services/journal_buffer.py): the user sees their own at once.
    container.search_journal.flush()


def interaction_body(item: JournalItem) -> dict[str, Any]:
    """A touchpoint as the journal shows it."""
    return {"id": item.id, "kind": item.kind, "channel": item.channel, "at": item.at,
            "subject": {"type": item.subject_type, "id": item.subject_id}, "data": item.data,
            "metrics": _plain(item.metrics)}


def _plain(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    # A free-form object: its times are written as RFC 3339 like every other time of the API.
    if metrics is None:
        return None
    return {key: value.isoformat() if isinstance(value, datetime) else value for key, value in metrics.items()}


@blp.route("/interactions")
class Interactions(MethodView):
    @blp.auth("user")
    @blp.arguments(InteractionListArgs, location="query")
    @blp.response(200, page_schema(InteractionSchema, "InteractionPageSchema"))
    def get(self, args):
        """The interaction journal: every touchpoint with its channel and time, newest first, with effort metrics"""
        container = _container()
        _write_pending_searches(container)
        page = journal.list_journal(container.database, current_user_id(), kind=args["kind"], since=args["since"],
                                    limit=args["limit"], cursor=decode_cursor(args["cursor"]))
        return page_body(page, interaction_body)


@blp.route("/sharing")
class Sharing(MethodView):
    @blp.auth("user")
    @blp.arguments(ListArgs, location="query")
    @blp.response(200, page_schema(SharingEntrySchema, "SharingPageSchema"))
    def get(self, args):
        """The sharing ledger: every time data about the caller left the system, newest first"""
        page = sharing.list_sharing(_container().database, current_user_id(), limit=args["limit"],
                                    cursor=decode_cursor(args["cursor"]))
        return page_body(page, sharing.ledger_body)


@blp.route("/export")
class Export(MethodView):
    @blp.auth("user")
    @blp.response(200, ExportSchema)
    def get(self):
        """Everything stored about the caller as one JSON document (device tokens masked), streamed

        Sections: profile, consents and their history, devices, products, telemetry, location history,
        context events, current context, geofence state, triggers, suggestions with their reasons and pushes,
        feedback, interactions, sharing ledger, webhook deliveries, queued work, stored responses, help cases
        and messages. No cap on rows: the document is written as it is read.
        """
        container = _container()
        _write_pending_searches(container)
        user_id = current_user_id()
        chunks = export.export_chunks(container.database, user_id)
        # The generator needs no request context: it reads with its own session, from ids taken here.
        response = Response(chunks, mimetype="application/json")
        response.headers["Content-Disposition"] = f'attachment; filename="smartsvc-export-{user_id}.json"'
        response.headers["Cache-Control"] = "no-store"
        return response
