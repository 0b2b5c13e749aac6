"""Rule bodies for tests: example rules, and generated bodies made consistent with their trigger.

The ``event.*`` facts a rule may use depend on its trigger, and for a change
(PATCH) on the trigger stored with the rule: a rule across fields (and
stored state) that a JSON Schema can only state in words. The property-based
tests use :func:`align_event_facts` to turn schema-valid bodies into ones
the API must accept; the API tests cover the mismatch itself.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Mapping

from smartsvc.rules.facts import EVENT_FACTS
from smartsvc.rules.limits import MAX_NODES, MAX_RULE_BYTES
from smartsvc.rules.rule import rule_bytes

# SUGGESTIONS.md's example rule.
SMALL_SPOTS = {
    "name": "small spots before arrival",
    "trigger": {"event": "trip.approaching", "within_m": 1500},
    "conditions": {"all": [{"fact": "product.attributes.length_m", "op": "<=", "value": 3.0}]},
    "action": {"recipe": "spots_near_destination", "params": {"radius_m": 400, "limit": 5, "duration_min": 60}},
    "priority": 10, "cooldown_s": 3600, "enabled": True,
}

# Stand-ins: a leaf any trigger allows, and text no longer than the shortest placeholder.
NEUTRAL_LEAF = {"fact": "user.weekday", "op": "exists"}
_EVENT_PLACEHOLDER = re.compile(r"\{(event\.[^{}]*)\}")


def example_rule(**changes: Any) -> dict[str, Any]:
    """A fresh copy of SUGGESTIONS.md's example rule with ``changes``."""
    return {**copy.deepcopy(SMALL_SPOTS), **changes}


def _leaves_aligned(node: Any, provided: Mapping[str, Any]) -> Any:
    if isinstance(node, dict):
        fact = node.get("fact")
        if isinstance(fact, str) and fact.startswith("event.") and fact not in provided:
            return dict(NEUTRAL_LEAF)
        return {key: _leaves_aligned(value, provided) for key, value in node.items()}
    if isinstance(node, list):
        return [_leaves_aligned(item, provided) for item in node]
    return node


def _templates_aligned(action: Any, provided: Mapping[str, Any]) -> Any:
    params = action.get("params") if isinstance(action, dict) else None
    if not isinstance(params, dict):
        return action
    fixed = dict(params)
    for name in ("title", "body"):
        if isinstance(fixed.get(name), str):
            fixed[name] = _EVENT_PLACEHOLDER.sub(
                lambda match: match.group(0) if match.group(1) in provided else "x", fixed[name])
    return {**action, "params": fixed}


def align_event_facts(body: Mapping[str, Any], stored: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``body`` (a new rule, or a change of ``stored``) with the event facts its trigger lacks replaced.

    Leaves on such facts become :data:`NEUTRAL_LEAF`; such placeholders
    become "x". A stored part the change leaves alone is sent fixed too.
    """
    merged = {**(stored or {}), **body}
    trigger = merged.get("trigger")
    event = trigger.get("event") if isinstance(trigger, dict) else None
    if event not in EVENT_FACTS:
        return dict(body)
    provided = EVENT_FACTS[event]
    aligned = dict(body)
    for key, fix in (("conditions", _leaves_aligned), ("action", _templates_aligned)):
        if key in merged:
            fixed = fix(merged[key], provided)
            if fixed != merged[key]:
                aligned[key] = fixed
    return aligned


def within_budgets(body: Mapping[str, Any]) -> bool:
    """True when a generated body keeps the budgets no JSON Schema can state: tree nodes, bytes."""
    return node_count(body.get("conditions")) <= MAX_NODES and rule_bytes(body) <= MAX_RULE_BYTES


def node_count(tree: Any) -> int:
    """Nodes of a condition tree (every object in it; the rule language's ``MAX_NODES`` counts these)."""
    if isinstance(tree, dict):
        return 1 + sum(node_count(value) for key, value in tree.items() if key in ("all", "any", "not"))
    if isinstance(tree, list):
        return sum(node_count(item) for item in tree)
    return 0
