"""The rule language as OpenAPI components, built from its catalogue (:mod:`smartsvc.rules`).

The document must say exactly which rules are accepted, so that clients (and
the property-based tests) can build valid ones: triggers and recipes are
``oneOf`` their kinds; the condition tree is unrolled into one component per
level down to :data:`~smartsvc.rules.limits.MAX_DEPTH`, so its depth is part of
the schema; a leaf is ``oneOf`` groups of facts that take the same operators
with the same operand. Everything is generated from the same catalogue the
validator uses, so the two cannot drift apart.

What no JSON Schema can say is stated in the descriptions: the budgets of a
whole rule (tree nodes, bytes of JSON), and that ``event.*`` facts (and
placeholders) must be ones the rule's own trigger provides.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..rules import limits
from ..rules.facts import (
    EVENT_FACTS,
    FACTS,
    LOCATION,
    METADATA_FACT,
    METADATA_FACT_PATTERN,
    METADATA_PREFIX,
    THRESHOLD_FACTS,
    Fact,
    all_event_facts,
)
from ..rules.ops import CHOICE, LOCAL_TIME, NUMERIC, ORDERED, SCALAR, Operand, operand_for, ops_for
from ..rules.params import INTEGER, NUMBER, TEMPLATE, TEXT, TIME, WEEKDAYS, Param
from ..rules.recipes import RECIPES
from ..rules.triggers import TRIGGERS
from ..rules.values import TIME_PATTERN
from .fields import NOT_BLANK_PATTERN, SPACE_CLASS

_PREFIX = "#/components/schemas/"

# Trigger events documented together (they take the same fields).
TRIGGER_COMPONENTS = {
    "GeofenceTrigger": ("geofence.entered", "geofence.exited", "geofence.dwelled"),
    "TripTrigger": ("trip.started", "trip.arrived"),
    "TripApproachingTrigger": ("trip.approaching",),
    "TelemetryUpdatedTrigger": ("telemetry.updated",),
    "TelemetryThresholdTrigger": ("telemetry.threshold",),
    "ScheduleTrigger": ("schedule",),
}
ACTION_COMPONENTS = {name: "".join(part.capitalize() for part in name.split("_")) + "Action" for name in RECIPES}
CONDITION = "RuleCondition"
LEAF = "RuleConditionLeaf"


def ref(name: str) -> dict[str, str]:
    """A reference to component ``name``."""
    return {"$ref": _PREFIX + name}


def _level_name(level: int) -> str:
    if level >= limits.MAX_DEPTH:
        return LEAF
    return CONDITION if level == 1 else f"{CONDITION}Level{level}"


# --------------------------------------------------------------------------- values


def _number(integer: bool, minimum: float, maximum: float) -> dict[str, Any]:
    return {"type": "integer" if integer else "number", "minimum": minimum, "maximum": maximum}


def _time() -> dict[str, Any]:
    return {"type": "string", "pattern": f"^{TIME_PATTERN}$", "example": "09:00"}


def operand_schema(operand: Operand) -> dict[str, Any]:
    """The JSON Schema of a leaf's ``value`` for ``operand``."""
    if operand.many:
        return {"type": "array", "minItems": 1, "maxItems": limits.MAX_LIST_VALUES,
                "items": operand_schema(operand.one())}
    if operand.type == NUMERIC:
        return _number(operand.integer, operand.minimum, operand.maximum)
    if operand.type == CHOICE:
        return {"type": "string", "enum": list(operand.enum)}
    if operand.type == LOCAL_TIME:
        return _time()
    bounded = _number(False, -limits.MAX_ABS_NUMBER, limits.MAX_ABS_NUMBER)
    if operand.type == ORDERED:
        return {"anyOf": [bounded, _time()]}
    text: dict[str, Any] = {"type": "string", "maxLength": operand.max_length}
    if operand.min_length:
        text["minLength"] = operand.min_length
    if operand.type == SCALAR:
        return {"anyOf": [text, bounded, {"type": "boolean"}]}
    return text


# --------------------------------------------------------------------------- the condition tree


def fact_groups() -> list[tuple[dict[str, Any], tuple[str, ...], dict[str, Any] | None]]:
    """(fact schema, ops, value schema) triples; each (fact, op) pair is in exactly one of them.

    Named facts are grouped into an ``enum``; ``geofence.metadata.*`` (any key) is a ``pattern``.
    """
    facts: list[tuple[str | None, Fact]] = [*{**FACTS, **all_event_facts()}.items(), (None, METADATA_FACT)]
    groups: dict[tuple[bool, tuple[str, ...], str], list[str]] = {}
    values: dict[str, dict[str, Any] | None] = {}
    for name, fact in facts:
        by_value: dict[str, list[str]] = {}
        for op in ops_for(fact):
            operand = operand_for(fact, name or METADATA_PREFIX + "<key>", op)
            schema = operand_schema(operand) if operand is not None else None
            key = json.dumps(schema, sort_keys=True)
            values[key] = schema
            by_value.setdefault(key, []).append(op)
        for key, ops in by_value.items():
            groups.setdefault((name is None, tuple(ops), key), []).append(name or "")
    triples = []
    for (metadata, ops, key), names in groups.items():
        fact_schema: dict[str, Any] = (
            {"type": "string", "pattern": f"^{METADATA_FACT_PATTERN}$"} if metadata
            else {"type": "string", "enum": names})
        triples.append((fact_schema, ops, values[key]))
    return triples


def leaf_schema() -> dict[str, Any]:
    """A condition on one fact: ``oneOf`` the groups of facts that take the same operators and operand."""
    branches = []
    for fact_schema, ops, value_schema in fact_groups():
        properties: dict[str, Any] = {"fact": fact_schema, "op": {"type": "string", "enum": list(ops)}}
        required = ["fact", "op"]
        if value_schema is not None:
            properties["value"] = value_schema
            required.append("value")
        branches.append({"type": "object", "additionalProperties": False, "required": required,
                         "properties": properties})
    return {
        "description": (
            "A condition on one fact of the context: `fact`, `op` and (except for `exists`) `value`. "
            "A missing fact makes it false whatever `op` is (`!=` included); `exists` is true when the fact has "
            "a value. Facts: `user.*`, `product.kind|brand|name`, `product.attributes.*`, `product.telemetry.*`, "
            "`trip.*`, `geofence.tag`, `geofence.metadata.<key>` (any key) and `event.*` — the last only those "
            "the rule's trigger provides: "
            + "; ".join(f"{event}: {', '.join(facts) or 'none'}" for event, facts in EVENT_FACTS.items()) + "."
        ),
        "oneOf": branches,
    }


def level_schema(level: int) -> dict[str, Any]:
    """A node at ``level`` (1 = the root): a leaf, or ``all``/``any``/``not`` over nodes of the next level."""
    child = ref(_level_name(level + 1))

    def combinator(key: str, items: dict[str, Any]) -> dict[str, Any]:
        return {"type": "object", "additionalProperties": False, "required": [key], "properties": {key: items}}

    schema = {"oneOf": [
        ref(LEAF),
        combinator("all", {"type": "array", "maxItems": limits.MAX_CHILDREN, "items": child,
                           "description": "All of these hold (an empty list holds)"}),
        combinator("any", {"type": "array", "minItems": 1, "maxItems": limits.MAX_CHILDREN, "items": child,
                           "description": "At least one of these holds"}),
        combinator("not", child),
    ]}
    if level == 1:
        schema["description"] = (
            f"A condition tree: a leaf, or `all`/`any` (at most {limits.MAX_CHILDREN} each) or `not` over "
            f"subtrees, at most {limits.MAX_DEPTH} levels deep (every node counts, leaves included) and "
            f"at most {limits.MAX_NODES} nodes in all; the rule's trigger, conditions and action together at "
            f"most {limits.MAX_RULE_BYTES:,} bytes of compact JSON. Default: `{{\"all\": []}}` (always)."
        )
    return schema


# --------------------------------------------------------------------------- triggers and recipes


def _placeholder_alternatives() -> str:
    names = [name for name, fact in {**FACTS, **all_event_facts()}.items() if fact.kind != LOCATION]
    return "|".join([*(re.escape(name) for name in names), METADATA_FACT_PATTERN])


def template_pattern() -> str:
    """Non-blank text whose braces are all ``{fact}`` placeholders of known facts."""
    placeholder = rf"\{{(?:{_placeholder_alternatives()})\}}"
    return rf"^[{SPACE_CLASS}]*(?:[^{{}}{SPACE_CLASS}]|{placeholder})(?:[^{{}}]|{placeholder})*$"


def param_schema(param: Param) -> dict[str, Any]:
    """The JSON Schema of a trigger field or recipe parameter."""
    schema: dict[str, Any]
    if param.type in (INTEGER, NUMBER):
        schema = _number(param.type == INTEGER, param.minimum, param.maximum)  # type: ignore[arg-type]
    elif param.type == TEXT:
        schema = {"type": "string", "minLength": 1, "maxLength": param.max_length, "pattern": NOT_BLANK_PATTERN}
    elif param.type == TIME:
        schema = _time()
    elif param.type == WEEKDAYS:
        schema = {"type": "array", "minItems": 1, "maxItems": 7, "uniqueItems": True,
                  "items": {"type": "integer", "minimum": 1, "maximum": 7}}
    elif param.type == TEMPLATE:
        schema = {"type": "string", "minLength": 1, "maxLength": param.max_length, "pattern": template_pattern()}
    else:
        schema = {"type": "string", "enum": list(param.enum)}
    schema["description"] = param.description
    if param.default is not None:
        schema["default"] = param.default
    return schema


def _object(properties: dict[str, Any], required: list[str], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "required": required, "properties": properties,
            **extra}


def trigger_schema(events: tuple[str, ...]) -> dict[str, Any]:
    """The trigger object of ``events`` (which share their fields)."""
    spec = TRIGGERS[events[0]]
    event = {"type": "string", "enum": list(events)}
    if events == ("telemetry.threshold",):
        return {"description": spec.description, "oneOf": [_threshold_trigger(event, fact, bounds)
                                                            for fact, bounds in _threshold_ranges().items()]}
    properties = {"event": event, **{name: param_schema(param) for name, param in spec.fields.items()}}
    required = ["event", *(name for name, param in spec.fields.items() if param.required)]
    extra: dict[str, Any] = {"description": "; ".join(TRIGGERS[name].description for name in events)}
    if spec.one_of:
        extra["anyOf"] = [{"required": [name]} for name in spec.one_of]
    return _object(properties, required, **extra)


def _threshold_ranges() -> dict[tuple[str, ...], tuple[float, float]]:
    by_range: dict[tuple[float, float], list[str]] = {}
    for fact, bounds in THRESHOLD_FACTS.items():
        by_range.setdefault(bounds, []).append(fact)
    return {tuple(facts): bounds for bounds, facts in by_range.items()}


def _threshold_trigger(event: dict[str, Any], facts: tuple[str, ...], bounds: tuple[float, float]) -> dict[str, Any]:
    fields = TRIGGERS["telemetry.threshold"].fields
    properties = {
        "event": event,
        "fact": {"type": "string", "enum": list(facts), "description": fields["fact"].description},
        "op": param_schema(fields["op"]),
        "value": {**_number(False, *bounds), "description": fields["value"].description},
    }
    return _object(properties, ["event", "fact", "op", "value"])


def action_schema(name: str) -> dict[str, Any]:
    """The action object of recipe ``name`` with its parameters."""
    recipe = RECIPES[name]
    params = _object({key: param_schema(param) for key, param in recipe.params.items()},
                     [key for key, param in recipe.params.items() if param.required])
    required = ["recipe", "params"] if recipe.params_required else ["recipe"]
    return _object({"recipe": {"type": "string", "enum": [name]}, "params": params}, required,
                   description=recipe.description)


def rule_components() -> dict[str, dict[str, Any]]:
    """Every component the rule schemas refer to, by name."""
    components: dict[str, dict[str, Any]] = {
        "RuleTrigger": {"description": "What the rule waits for", "oneOf": [ref(n) for n in TRIGGER_COMPONENTS]},
        **{name: trigger_schema(events) for name, events in TRIGGER_COMPONENTS.items()},
        "RuleAction": {"description": "The recipe that computes the suggestion; left-out parameters take "
                                      "their defaults when the rule is saved",
                       "oneOf": [ref(n) for n in ACTION_COMPONENTS.values()]},
        **{component: action_schema(name) for name, component in ACTION_COMPONENTS.items()},
    }
    for level in range(1, limits.MAX_DEPTH):
        components[_level_name(level)] = level_schema(level)
    components[LEAF] = leaf_schema()
    return components
