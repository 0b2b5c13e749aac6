"""Declared fields of triggers and recipe parameters: one description drives checking, defaults and the docs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .values import is_integer, is_number, is_time

INTEGER, NUMBER, TEXT, CHOICE, TIME, WEEKDAYS, TEMPLATE = (
    "integer", "number", "text", "enum", "time", "weekdays", "template")


@dataclass(frozen=True)
class Param:
    """One field: its type and bounds, whether it is required, and the value it takes when left out."""

    type: str
    description: str
    minimum: float | None = None
    maximum: float | None = None
    required: bool = False
    default: Any = None
    max_length: int = 0
    enum: tuple[str, ...] = ()


def describe(param: Param) -> str:
    """What a value of ``param`` must be, for a person."""
    if param.type == INTEGER:
        return f"an integer from {param.minimum:g} to {param.maximum:g}"
    if param.type == NUMBER:
        return f"a number from {param.minimum:g} to {param.maximum:g}"
    if param.type == TEXT:
        return f"non-blank text of at most {param.max_length} characters"
    if param.type == CHOICE:
        return f"one of {', '.join(param.enum)}"
    if param.type == TIME:
        return "a local time HH:MM (00:00–23:59)"
    if param.type == WEEKDAYS:
        return "a list of distinct weekdays, 1 (Monday) to 7 (Sunday)"
    return f"a text template of at most {param.max_length} characters"


def _accepts(param: Param, value: Any) -> bool:
    if param.type in (INTEGER, NUMBER):
        if param.type == INTEGER and not is_integer(value):
            return False
        return is_number(value) and param.minimum <= value <= param.maximum  # type: ignore[operator]
    if param.type == TEXT:
        return isinstance(value, str) and 0 < len(value) <= param.max_length and bool(value.strip())
    if param.type == CHOICE:
        return isinstance(value, str) and value in param.enum
    if param.type == TIME:
        return is_time(value)
    if param.type == WEEKDAYS:
        return (isinstance(value, list) and 1 <= len(value) <= 7
                and all(is_integer(day) and 1 <= day <= 7 for day in value) and len(set(value)) == len(value))
    return True  # templates are checked by smartsvc.rules.templates, which knows the trigger


def check_fields(data: Any, params: Mapping[str, Param], path: str, owner: str) -> list[tuple[str, str]]:
    """Problems of an object whose fields ``params`` declares: shape, unknown and missing fields, values."""
    if not isinstance(data, Mapping):
        return [(path, "must be an object")]
    issues = [(f"{path}.{str(key)[:50]}", f"unknown field for {owner}"
               + (f"; it has {', '.join(params)}" if params else "; it has none"))
              for key in data if key not in params]
    for name, param in params.items():
        if name not in data:
            if param.required:
                issues.append((f"{path}.{name}", "is required"))
        elif not _accepts(param, data[name]):
            issues.append((f"{path}.{name}", f"must be {describe(param)}"))
    return issues


def with_defaults(data: Mapping[str, Any], params: Mapping[str, Param]) -> dict[str, Any]:
    """``data`` with every left-out field that has a default filled in, in declaration order."""
    filled = {name: param.default for name, param in params.items() if param.default is not None}
    filled.update(data)
    return {name: filled[name] for name in params if name in filled}
