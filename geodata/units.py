"""Parse the measurement strings found in uploads (OSM tags, CSV cells).

Each parser returns a float in the model's unit or raises :class:`UnitError`
whose message names the value and the expected unit in words a person
understands, e.g. ``'2,2 m' is not a number in metres``. The caller adds the
field name. ``None`` means "no limit" (``none``, ``default``, ...).
"""

from __future__ import annotations

import math
import re

FOOT_M = 0.3048
INCH_M = 0.0254
POUND_KG = 0.45359237
SHORT_TON_KG = 907.18474

# OSM values that state there is no restriction.
NO_LIMIT = frozenset({"none", "no", "default", "unsigned", "no_sign", "unlimited", "no_indications"})

_NUMBER = r"(\d+(?:\.\d+)?|\.\d+)"
_LENGTH_RE = re.compile(rf"^{_NUMBER}\s*(m|metres|meters|metre|meter|cm|km|mi|ft|feet|foot|')?$")
_FEET_INCHES_RE = re.compile(r"""^(\d+)\s*(?:'|ft|feet)\s*(\d+(?:\.\d+)?)\s*(?:"|''|in|inches)?$""")
_INCHES_RE = re.compile(rf"""^{_NUMBER}\s*(?:"|in|inches)$""")
_WEIGHT_RE = re.compile(rf"^{_NUMBER}\s*(t|tonnes|tonne|tons|ton|st|kg|lbs|lb|pounds)?$")
_DURATION_RE = re.compile(
    rf"^{_NUMBER}\s*(min|mins|minute|minutes|m|h|hr|hrs|hour|hours|d|day|days|s|sec|seconds)?$"
)
_HHMM_RE = re.compile(r"^(\d{1,2}):(\d{2})$")
_POWER_RE = re.compile(rf"^{_NUMBER}\s*(kw|kva|w|va|mw)?$")


class UnitError(ValueError):
    """A value is not a number in the expected unit; the message says why."""


def _clean(value: object) -> str:
    return str(value).strip().lower()


def _finite(number: float, raw: object, unit_words: str) -> float:
    if not math.isfinite(number) or number < 0:
        raise UnitError(f"'{raw}' is not a number in {unit_words}")
    return number


def parse_length_m(value: object, *, default_unit: str = "m") -> float | None:
    """Metres from ``2.2``, ``"2.2 m"``, ``"220 cm"``, ``"7'6\\""``, ``"7 ft"``.

    ``default_unit`` (``m`` or ``ft``) applies to a bare number. Decimal commas
    are refused on purpose: ``2,2`` could be a list.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise UnitError(f"'{value}' is not a number in metres")
    if isinstance(value, (int, float)):
        number = float(value) * (FOOT_M if default_unit == "ft" else 1.0)
        return _finite(number, value, "metres")
    text = _clean(value)
    if text in NO_LIMIT:
        return None
    match = _FEET_INCHES_RE.match(text)
    if match:
        return int(match.group(1)) * FOOT_M + float(match.group(2)) * INCH_M
    match = _INCHES_RE.match(text)
    if match:
        return float(match.group(1)) * INCH_M
    match = _LENGTH_RE.match(text)
    if not match:
        raise UnitError(f"'{value}' is not a number in metres")
    number = float(match.group(1))
    unit = match.group(2) or default_unit
    factor = {"cm": 0.01, "km": 1000.0, "mi": 1609.344, "ft": FOOT_M, "feet": FOOT_M, "foot": FOOT_M, "'": FOOT_M}
    return _finite(number * factor.get(unit, 1.0), value, "metres")


def parse_weight_kg(value: object, *, default_unit: str = "t") -> float | None:
    """Kilograms from ``7.5`` (tonnes by default, as in OSM), ``"7.5 t"``, ``"3500 kg"``, ``"12000 lbs"``."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise UnitError(f"'{value}' is not a weight in tonnes")
    unit_words = "tonnes" if default_unit == "t" else "kilograms"
    if isinstance(value, (int, float)):
        factor = 1000.0 if default_unit == "t" else 1.0
        return _finite(float(value) * factor, value, unit_words)
    text = _clean(value)
    if text in NO_LIMIT:
        return None
    match = _WEIGHT_RE.match(text)
    if not match:
        raise UnitError(f"'{value}' is not a weight in {unit_words}")
    number = float(match.group(1))
    unit = match.group(2) or default_unit
    if unit in {"t", "tonnes", "tonne"}:
        factor = 1000.0
    elif unit in {"st", "tons", "ton"}:
        factor = SHORT_TON_KG
    elif unit in {"lbs", "lb", "pounds"}:
        factor = POUND_KG
    else:
        factor = 1.0
    return _finite(number * factor, value, unit_words)


def parse_duration_min(value: object) -> float | None:
    """Minutes from ``"2 h"``, ``"90 min"``, ``"01:30"``, or a bare number (minutes).

    ``no``/``none``/``unlimited`` mean no maximum stay and give ``None``.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise UnitError(f"'{value}' is not a duration in minutes")
    if isinstance(value, (int, float)):
        number = _finite(float(value), value, "minutes")
        if number == 0:
            raise UnitError(f"'{value}' is not a duration in minutes (it must be more than 0)")
        return number
    text = _clean(value)
    if text in NO_LIMIT:
        return None
    match = _HHMM_RE.match(text)
    if match:
        minutes = int(match.group(1)) * 60 + int(match.group(2))
        if minutes == 0:
            raise UnitError(f"'{value}' is not a duration in minutes (it must be more than 0)")
        return float(minutes)
    match = _DURATION_RE.match(text)
    if not match:
        raise UnitError(f"'{value}' is not a duration such as '2 h' or '90 min'")
    number = float(match.group(1))
    unit = match.group(2) or "min"
    if unit.startswith("h"):
        number *= 60
    elif unit.startswith("d"):
        number *= 1440
    elif unit.startswith("s"):
        number /= 60
    if number <= 0:
        raise UnitError(f"'{value}' is not a duration in minutes (it must be more than 0)")
    return number


def parse_power_kw(value: object) -> float | None:
    """Kilowatts from ``22``, ``"22 kW"``, ``"11000 W"``, ``"22 kVA"``; a list ``"22 kW;11 kW"`` gives the largest."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise UnitError(f"'{value}' is not a power in kW")
    if isinstance(value, (int, float)):
        return _finite(float(value), value, "kW")
    best: float | None = None
    for part in str(value).split(";"):
        text = _clean(part)
        match = _POWER_RE.match(text)
        if not match:
            raise UnitError(f"'{value}' is not a power in kW")
        number = float(match.group(1))
        unit = match.group(2) or "kw"
        factor = {"w": 0.001, "va": 0.001, "mw": 1000.0}.get(unit, 1.0)
        number = _finite(number * factor, value, "kW")
        best = number if best is None else max(best, number)
    return best


def parse_count(value: object) -> int:
    """A whole number ≥ 0 from ``12`` or ``"12"``."""
    if isinstance(value, bool):
        raise UnitError(f"'{value}' is not a whole number")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    else:
        text = str(value).strip()
        if not text.isdigit():
            raise UnitError(f"'{value}' is not a whole number")
        number = int(text)
    if number < 0:
        raise UnitError(f"'{value}' is not a whole number")
    return number


def parse_bool(value: object) -> bool:
    """True/false from JSON booleans or ``yes``/``no``/``true``/``false``/``1``/``0``."""
    if isinstance(value, bool):
        return value
    text = _clean(value)
    if text in {"yes", "true", "1"}:
        return True
    if text in {"no", "false", "0", ""}:
        return False
    raise UnitError(f"'{value}' is not yes or no")
