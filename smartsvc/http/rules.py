"""Rules (operator): when a trigger fires and the conditions hold, a recipe makes a suggestion.

Request body (create): ``name``, ``trigger``, ``action``, and optionally
``conditions`` (default: always), ``priority`` (default 0), ``cooldown_s``
(default 3600) and ``enabled`` (default true) — SUGGESTIONS.md "Rules". The
rule language (:mod:`smartsvc.rules`) judges the whole rule when it is
saved, and a change (PATCH) is merged into the stored rule and judged whole
again; every problem is a 422 naming its field by path
(``conditions.all.0.fact``). All operator keys share one set of rules.
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import current_app, url_for
from flask.views import MethodView

from ..models import Rule
from ..rules import limits
from ..rules.triggers import TRIGGER_EVENTS
from ..services import rules
from .api import Blueprint, current_principal
from .fields import JsonBoolean, JsonInteger, not_blank
from .idempotency import idempotent
from .pagination import ListArgs, decode_cursor, page_body, page_schema
from .rule_schemas import CONDITION, ref, rule_components


class _RulesBlueprint(Blueprint):
    """The rules blueprint, which also puts the rule language's components into the document."""

    def register_views_in_doc(self, api: Any, app: Any, spec: Any, *, name: str, parameters: Any) -> None:
        """Add the rule language's components (once per document), then document the views."""
        for component, schema in rule_components().items():
            if component not in spec.components.schemas:
                spec.components.schema(component, schema)
        super().register_views_in_doc(api, app, spec, name=name, parameters=parameters)


blp = _RulesBlueprint("rules", __name__, url_prefix="/v1/rules",
                      description="Rules: trigger, conditions and the recipe that makes a suggestion (operator)")


class _RulePart(ma.fields.Raw):
    """A JSON object the rule language judges (trigger, conditions, action); documented by its component."""

    def __init__(self, component: str, description: str, **kwargs: Any) -> None:
        super().__init__(metadata={"allOf": [ref(component)], "description": description}, **kwargs)


def _name(**kwargs: Any) -> ma.fields.String:
    return ma.fields.String(validate=[ma.validate.Length(min=1, max=limits.MAX_NAME_LENGTH), not_blank()],
                            metadata={"example": "small spots before arrival"}, **kwargs)


def _priority(**kwargs: Any) -> JsonInteger:
    return JsonInteger(validate=ma.validate.Range(min=limits.MIN_PRIORITY, max=limits.MAX_PRIORITY), metadata={
        "description": f"Higher first when several rules fire on one event (default {limits.DEFAULT_PRIORITY})"},
        **kwargs)


def _cooldown(**kwargs: Any) -> JsonInteger:
    return JsonInteger(validate=ma.validate.Range(min=0, max=limits.MAX_COOLDOWN_S), metadata={
        "description": f"Seconds before the rule may push to the same user again "
                       f"(default {limits.DEFAULT_COOLDOWN_S})"}, **kwargs)


_TRIGGER = "What the rule waits for"
_CONDITIONS = 'The condition tree over the context\'s facts (default {"all": []}: always)'
_ACTION = "The recipe that computes the suggestion, with its parameters"


class RuleCreateSchema(ma.Schema):
    name = _name(required=True)
    trigger = _RulePart("RuleTrigger", _TRIGGER, required=True)
    conditions = _RulePart(CONDITION, _CONDITIONS)
    action = _RulePart("RuleAction", _ACTION, required=True)
    priority = _priority()
    cooldown_s = _cooldown()
    enabled = JsonBoolean(metadata={"description": "A disabled rule never fires (default true)"})


class RulePatchSchema(ma.Schema):
    # A change needs something to change (an empty body is a client bug).
    OPENAPI_EXTRA = {"minProperties": 1}

    name = _name()
    trigger = _RulePart("RuleTrigger", _TRIGGER)
    conditions = _RulePart(CONDITION, _CONDITIONS)
    action = _RulePart("RuleAction", _ACTION)
    priority = _priority()
    cooldown_s = _cooldown()
    enabled = JsonBoolean()

    @ma.validates_schema
    def _not_empty(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if not data:
            raise ma.ValidationError(f"send at least one of: {', '.join(self.fields)}", field_name="body")


class RuleSchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    name = ma.fields.String(required=True)
    trigger = _RulePart("RuleTrigger", _TRIGGER, required=True)
    conditions = _RulePart(CONDITION, "The condition tree", required=True)
    action = _RulePart("RuleAction", "The recipe with every parameter (defaults filled in)", required=True)
    priority = ma.fields.Integer(required=True)
    cooldown_s = ma.fields.Integer(required=True)
    enabled = ma.fields.Boolean(required=True)
    created_by = ma.fields.String(required=True, allow_none=True, metadata={
        "description": "The key that created it (key:<id>)"})
    created_at = ma.fields.DateTime(required=True)
    updated_at = ma.fields.DateTime(required=True)


class RuleListArgs(ListArgs):
    enabled = ma.fields.Boolean(load_default=None, truthy={"true"}, falsy={"false"}, metadata={
        "description": "Only enabled (true) or disabled (false) rules"})
    event = ma.fields.String(load_default=None, validate=ma.validate.OneOf(TRIGGER_EVENTS), metadata={
        "description": "Only rules with this trigger event"})


def rule_body(rule: Rule) -> dict[str, Any]:
    """A rule as the API shows it."""
    return {
        "id": rule.id, "name": rule.name, "trigger": rule.trigger, "conditions": rule.conditions,
        "action": rule.action, "priority": rule.priority, "cooldown_s": rule.cooldown_s, "enabled": rule.enabled,
        "created_by": rule.created_by, "created_at": rule.created_at, "updated_at": rule.updated_at,
    }


def _container() -> Any:
    return current_app.extensions["smartsvc"]


def _location(body: dict[str, Any]) -> dict[str, str]:
    return {"Location": url_for("rules.RuleById", rule_id=body["id"])}


LOCATION_HEADER = {"Location": {"description": "The new rule", "schema": {"type": "string"}}}


@blp.route("")
class Rules(MethodView):
    @blp.auth("operator")
    @idempotent(replay_headers=_location)
    @blp.arguments(RuleCreateSchema)
    @blp.response(201, RuleSchema, headers=LOCATION_HEADER)
    @blp.alt_response(409, response="CONFLICT")
    def post(self, data):
        """Create a rule (checked whole: every problem is a 422 naming its field path)"""
        container = _container()
        rule = rules.create_rule(container.database, data, created_by=current_principal().ident,
                                 max_rules=container.settings.max_rules)
        body = rule_body(rule)
        return body, 201, _location(body)

    @blp.auth("operator")
    @blp.arguments(RuleListArgs, location="query")
    @blp.response(200, page_schema(RuleSchema, "RulePageSchema"))
    def get(self, args):
        """Rules in creation order, optionally only enabled or disabled ones, or those of one trigger event"""
        page = rules.list_rules(_container().database, enabled=args["enabled"], event=args["event"],
                                limit=args["limit"], cursor=decode_cursor(args["cursor"]))
        return page_body(page, rule_body)


@blp.route("/<uuid:rule_id>")
class RuleById(MethodView):
    @blp.auth("operator")
    @blp.response(200, RuleSchema)
    def get(self, rule_id):
        """One rule"""
        return rule_body(rules.get_rule(_container().database, rule_id))

    @blp.auth("operator")
    @blp.arguments(RulePatchSchema)
    @blp.response(200, RuleSchema)
    def patch(self, changes, rule_id):
        """Change fields of a rule (each replaces the stored one whole); the result is checked whole"""
        return rule_body(rules.update_rule(_container().database, rule_id, changes))

    @blp.auth("operator")
    @blp.response(204)
    def delete(self, rule_id):
        """Delete a rule"""
        rules.delete_rule(_container().database, rule_id)
