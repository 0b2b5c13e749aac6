"""Text templates of the ``message`` recipe: ``"Battery at {product.telemetry.battery_pct} %"``.

Braces are only for placeholders, and a placeholder names a fact the rule's
trigger provides; both are checked when the rule is saved. A message whose
placeholders cannot all be filled when it fires is not sent.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from .facts import LOCATION, fact_for, lookup, unknown_fact_message
from .values import is_number

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_STRAY_BRACE = re.compile(r"[{}]")


def placeholders(template: str) -> list[str]:
    """The fact names a template's placeholders refer to, in order."""
    return _PLACEHOLDER.findall(template)


def check_template(template: Any, event: str | None, max_length: int) -> list[str]:
    """Problems of a template for a rule triggered by ``event`` (None: the trigger is invalid)."""
    if not isinstance(template, str) or not 0 < len(template) <= max_length or not template.strip():
        return [f"must be non-blank text of at most {max_length} characters"]
    problems = []
    if _STRAY_BRACE.search(_PLACEHOLDER.sub("", template)):
        problems.append("braces are only for {fact} placeholders: a '{' or '}' stands alone")
    for name in placeholders(template):
        fact = fact_for(name, event)
        if fact is None:
            problems.append(f"placeholder {{{name[:100]}}}: {unknown_fact_message(name, event)}")
        elif fact.kind == LOCATION:
            problems.append(f"placeholder {{{name}}}: a location cannot be shown as text")
    return problems


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if is_number(value):
        # 3.0 → "3", 2.6912 → "2.69": what a person reads, not a float's repr.
        if isinstance(value, int) or value.is_integer():
            return str(int(value))
        return f"{value:.2f}".rstrip("0").rstrip(".")
    if isinstance(value, list):
        return ", ".join(_text(item) for item in value)
    return str(value)


def render(template: str, facts: Mapping[str, Any]) -> str | None:
    """The template with its placeholders filled from ``facts``; None when one of them is missing."""
    missing = False

    def fill(match: re.Match[str]) -> str:
        nonlocal missing
        value = lookup(facts, match.group(1))
        if value is None:
            missing = True
            return ""
        return _text(value)

    text = _PLACEHOLDER.sub(fill, template)
    return None if missing else text
