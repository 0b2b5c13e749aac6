"""JSON values as the rule language sees them: numbers that are not booleans, ``HH:MM`` times, equality by type."""

from __future__ import annotations

import math
import re
from typing import Any

from .limits import MAX_ABS_NUMBER

TIME_PATTERN = r"([01][0-9]|2[0-3]):[0-5][0-9]"
_TIME = re.compile(TIME_PATTERN)
# Facts may carry seconds ("09:30:15"); operands never do.
_FACT_TIME = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])(:[0-5][0-9])?")


def is_number(value: Any) -> bool:
    """A JSON number: int or float, never a bool (``True == 1`` in Python), and finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    # An int is always finite, and math.isfinite cannot convert one past a float's range.
    return isinstance(value, int) or math.isfinite(value)


def is_bounded_number(value: Any) -> bool:
    """A number an operand may be: finite and within ±MAX_ABS_NUMBER."""
    return is_number(value) and -MAX_ABS_NUMBER <= value <= MAX_ABS_NUMBER


def is_integer(value: Any) -> bool:
    """A JSON integer (not 3.0, as elsewhere in the API)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_time(value: Any) -> bool:
    """A local time ``HH:MM`` (00:00–23:59), as operands and the schedule trigger spell it."""
    return isinstance(value, str) and _TIME.fullmatch(value) is not None


def minutes(value: Any) -> float | None:
    """Minutes since midnight of a fact's ``HH:MM`` or ``HH:MM:SS``, or None when it is not a time."""
    if not isinstance(value, str):
        return None
    match = _FACT_TIME.fullmatch(value)
    if match is None:
        return None
    seconds = int(match.group(3)[1:]) if match.group(3) else 0
    return int(match.group(1)) * 60 + int(match.group(2)) + seconds / 60


def same(left: Any, right: Any) -> bool:
    """JSON equality: numbers by value (1 == 1.0), but a boolean or a text is never equal to a number."""
    if is_number(left) and is_number(right):
        return left == right
    if type(left) is not type(right):
        return False
    return bool(left == right)


def shown(value: Any) -> str:
    """A short rendering of an input value for a message: text cut at 50 characters, containers by kind."""
    if isinstance(value, str):
        return repr(value[:50] + ("…" if len(value) > 50 else ""))
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if is_number(value):
        return repr(value)[:50]
    return "an array" if isinstance(value, list) else "an object"


def is_scalar(value: Any) -> bool:
    """A JSON string, finite number or boolean."""
    return isinstance(value, (str, bool)) or is_number(value)
