"""The condition tree: ``all``, ``any``, ``not`` over leaves ``{"fact", "op", "value"}``.

:func:`check_conditions` judges a tree when a rule is saved (unknown facts and
operators, operands of the wrong type, trees too deep or too large) and names
each problem by its path, e.g. ``conditions.all.0.fact``.
:func:`evaluate` runs a saved tree on a context and returns the facts that
decided it, for the suggestion's ``reason``.

Semantics: ``all: []`` is true. A leaf on a fact the context does not have
is false whatever its operator (``!=`` included); only ``exists`` is about
presence, so ``{"not": {"fact": f, "op": "exists"}}`` asks for a missing fact.
"""

from __future__ import annotations

from typing import Any, Mapping

from .facts import fact_for, lookup, unknown_fact_message
from .limits import MAX_CHILDREN, MAX_DEPTH, MAX_FACT_LENGTH, MAX_NODES
from .ops import OPS, NotApplicable, apply, check_operand, operand_for
from .values import shown

Issue = tuple[str, str]

COMBINATORS = ("all", "any", "not")
LEAF_FIELDS = ("fact", "op", "value")
ALWAYS: dict[str, Any] = {"all": []}
_NODE_SHAPE = ('must be an object: a condition {"fact", "op", "value"}, or one of '
               '{"all": [...]}, {"any": [...]}, {"not": {...}}')


class _Walk:
    """State of one check: the trigger's event, problems found, nodes seen."""

    def __init__(self, event: str | None) -> None:
        self.event = event
        self.issues: list[Issue] = []
        self.nodes = 0

    def add(self, path: str, message: str) -> None:
        self.issues.append((path, message))


def check_conditions(tree: Any, event: str | None, path: str = "conditions") -> list[Issue]:
    """Every problem of a condition tree for a rule triggered by ``event`` (None: the trigger is invalid)."""
    walk = _Walk(event)
    _check_node(walk, tree, path, depth=1)
    if walk.nodes > MAX_NODES:
        walk.issues.insert(0, (path, f"has {walk.nodes} nodes; at most {MAX_NODES} (conditions and all/any/not)"))
    return walk.issues


def _check_node(walk: _Walk, node: Any, path: str, depth: int) -> None:
    walk.nodes += 1
    if not isinstance(node, Mapping):
        walk.add(path, _NODE_SHAPE)
        return
    combinators = [key for key in COMBINATORS if key in node]
    if not combinators:
        _check_leaf(walk, node, path)
        return
    if len(combinators) > 1:
        walk.add(path, f"has {' and '.join(combinators)}: a node is exactly one of all, any, not")
        return
    key = combinators[0]
    for extra in node:
        if extra != key:
            walk.add(f"{path}.{extra}", f"unknown field: a node with '{key}' has nothing else")
    if depth >= MAX_DEPTH:
        walk.add(path, f"nests deeper than {MAX_DEPTH} levels (each all, any, not and condition is one)")
        return
    value = node[key]
    if key == "not":
        _check_node(walk, value, f"{path}.not", depth + 1)
        return
    if not isinstance(value, list):
        walk.add(f"{path}.{key}", "must be a list of conditions")
        return
    if key == "any" and not value:
        walk.add(f"{path}.any", "must list at least one condition")
    if len(value) > MAX_CHILDREN:
        walk.add(f"{path}.{key}", f"lists {len(value)} conditions; at most {MAX_CHILDREN}")
        return
    for index, child in enumerate(value):
        _check_node(walk, child, f"{path}.{key}.{index}", depth + 1)


def _check_leaf(walk: _Walk, leaf: Mapping[str, Any], path: str) -> None:
    for extra in leaf:
        if extra not in LEAF_FIELDS:
            walk.add(f"{path}.{str(extra)[:50]}", "unknown field: a condition has fact, op and value "
                                                  "(or is one of all, any, not)")
    name, op = leaf.get("fact"), leaf.get("op")
    fact = None
    if "fact" not in leaf:
        walk.add(f"{path}.fact", "is required")
    elif not isinstance(name, str) or not name or len(name) > MAX_FACT_LENGTH:
        walk.add(f"{path}.fact", "must be a fact name such as product.attributes.length_m")
    else:
        fact = fact_for(name, walk.event)
        if fact is None:
            walk.add(f"{path}.fact", unknown_fact_message(name, walk.event))
    if "op" not in leaf:
        walk.add(f"{path}.op", "is required")
        return
    if not isinstance(op, str) or op not in OPS:
        walk.add(f"{path}.op", f"unknown op {shown(op)}; use one of {', '.join(OPS)}")
        return
    if fact is None:
        return
    try:
        operand = operand_for(fact, name, op)
    except NotApplicable as exc:
        walk.add(f"{path}.op", str(exc))
        return
    if operand is None:
        if "value" in leaf:
            walk.add(f"{path}.value", f"'{op}' takes no value")
        return
    if "value" not in leaf:
        walk.add(f"{path}.value", f"is required: '{op}' on {name} compares with a value")
        return
    for suffix, message in check_operand(operand, leaf["value"]):
        walk.add(f"{path}.value{suffix}", message)


def evaluate(conditions: Mapping[str, Any], facts: Mapping[str, Any]) -> tuple[bool, dict[str, Any]]:
    """Whether a (saved, valid) tree holds for ``facts``, and the facts that made it hold.

    ``facts`` is flat or nested (see :func:`smartsvc.rules.facts.lookup`). The
    facts returned are those of the leaves that decided the outcome, with
    their values (None when missing, which a ``not`` can decide on); empty
    when it does not hold.
    """
    matched, seen = _evaluate(conditions, facts)
    return matched, (seen if matched else {})


def _evaluate(node: Any, facts: Mapping[str, Any]) -> tuple[bool, dict[str, Any]]:
    """The outcome and the facts that decided it (for a false ``all``: those of the first false child)."""
    if not isinstance(node, Mapping):
        return False, {}
    if "all" in node:
        seen: dict[str, Any] = {}
        for child in node["all"]:
            holds, child_seen = _evaluate(child, facts)
            if not holds:
                return False, child_seen
            seen.update(child_seen)
        return True, seen
    if "any" in node:
        true_seen: dict[str, Any] = {}
        false_seen: dict[str, Any] = {}
        matched = False
        for child in node["any"]:
            holds, child_seen = _evaluate(child, facts)
            (true_seen if holds else false_seen).update(child_seen)
            matched = matched or holds
        return matched, (true_seen if matched else false_seen)
    if "not" in node:
        holds, child_seen = _evaluate(node["not"], facts)
        return not holds, child_seen
    name = node.get("fact")
    if not isinstance(name, str):
        return False, {}
    actual = lookup(facts, name)
    return apply(str(node.get("op")), actual, node.get("value")), {name: actual}
