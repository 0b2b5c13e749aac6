"""A whole rule: ``name``, ``trigger``, ``conditions``, ``action``, ``priority``, ``cooldown_s``, ``enabled``.

:func:`validate_rule` lists every problem of a rule as ``(field path, message)``
(``conditions.all.0.fact``: "unknown fact ..."); it is what a save checks,
whole, also after a partial change. :func:`normalize_rule` gives a valid rule
its defaults, as it is stored.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Mapping

from .conditions import ALWAYS, check_conditions
from .limits import (
    DEFAULT_COOLDOWN_S,
    DEFAULT_PRIORITY,
    MAX_COOLDOWN_S,
    MAX_ISSUES,
    MAX_NAME_LENGTH,
    MAX_PRIORITY,
    MAX_RULE_BYTES,
    MIN_PRIORITY,
)
from .recipes import check_action, normalize_action
from .triggers import check_trigger, normalize_trigger
from .values import is_integer

RULE_FIELDS = ("name", "trigger", "conditions", "action", "priority", "cooldown_s", "enabled")
REQUIRED_FIELDS = ("name", "trigger", "action")
SIZED_FIELDS = ("trigger", "conditions", "action")

Issue = tuple[str, str]


def _check_name(value: Any) -> list[Issue]:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME_LENGTH or not value.strip():
        return [("name", f"must be non-blank text of at most {MAX_NAME_LENGTH} characters")]
    return []


def _check_integer(name: str, value: Any, low: int, high: int) -> list[Issue]:
    if not is_integer(value) or not low <= value <= high:
        return [(name, f"must be an integer from {low} to {high}")]
    return []


def validate_rule(data: Any) -> list[Issue]:
    """Every problem of a rule as ``(field path, message)``; empty when it can be saved.

    At most :data:`~smartsvc.rules.limits.MAX_ISSUES` are listed.
    """
    if not isinstance(data, Mapping):
        return [("body", "must be a JSON object")]
    issues: list[Issue] = [(str(key)[:50], f"unknown field; a rule has {', '.join(RULE_FIELDS)}")
                           for key in data if key not in RULE_FIELDS]
    issues.extend((name, "is required") for name in REQUIRED_FIELDS if name not in data)
    if "name" in data:
        issues.extend(_check_name(data["name"]))
    event = None
    if "trigger" in data:
        event, trigger_issues = check_trigger(data["trigger"])
        issues.extend(trigger_issues)
    if "conditions" in data:
        issues.extend(check_conditions(data["conditions"], event))
    if "action" in data:
        issues.extend(check_action(data["action"], event))
    if "priority" in data:
        issues.extend(_check_integer("priority", data["priority"], MIN_PRIORITY, MAX_PRIORITY))
    if "cooldown_s" in data:
        issues.extend(_check_integer("cooldown_s", data["cooldown_s"], 0, MAX_COOLDOWN_S))
    if "enabled" in data and not isinstance(data["enabled"], bool):
        issues.append(("enabled", "must be true or false"))
    if not issues:
        issues.extend(_check_size(data))
    return issues[:MAX_ISSUES]


def part_bytes(value: Any) -> int:
    """The size of a rule's part as stored: compact UTF-8 JSON."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def rule_bytes(data: Mapping[str, Any]) -> int:
    """The size of a rule's trigger, conditions and action together (see MAX_RULE_BYTES)."""
    return sum(part_bytes(data[name]) for name in SIZED_FIELDS if name in data)


def _check_size(data: Mapping[str, Any]) -> list[Issue]:
    sizes = {name: part_bytes(data[name]) for name in SIZED_FIELDS if name in data}
    total = sum(sizes.values())
    if total <= MAX_RULE_BYTES:
        return []
    largest = max(sizes, key=lambda name: sizes[name])
    return [(largest, f"trigger, conditions and action take {total:,} bytes as JSON ({largest}: "
                      f"{sizes[largest]:,}); at most {MAX_RULE_BYTES:,}")]


def normalize_rule(data: Mapping[str, Any]) -> dict[str, Any]:
    """A valid rule as stored: every field present, defaults filled in (a deep copy)."""
    return {
        "name": data["name"].strip(),
        "trigger": normalize_trigger(data["trigger"]),
        "conditions": copy.deepcopy(data.get("conditions", ALWAYS)),
        "action": normalize_action(data["action"]),
        "priority": data.get("priority", DEFAULT_PRIORITY),
        "cooldown_s": data.get("cooldown_s", DEFAULT_COOLDOWN_S),
        "enabled": data.get("enabled", True),
    }
