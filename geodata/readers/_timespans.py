"""Build OSM ``opening_hours`` expressions from the time spans of CurbLR and CDS.

One time span becomes one rule ``[dates] [weekdays] [times]`` (all of its
parts must hold); several spans are joined with ``,`` (the additional-rule
separator, i.e. OR). "Except during holidays" becomes ``; PH off``. What the
syntax cannot express raises :class:`Unsupported`; the readers then choose
the conservative reading: a restriction applies at all times, a permission
never.
"""

from __future__ import annotations

import re
from typing import Iterable

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DAYS = {
    "mo": "Mo", "mon": "Mo", "monday": "Mo", "tu": "Tu", "tue": "Tu", "tuesday": "Tu",
    "we": "We", "wed": "We", "wednesday": "We", "th": "Th", "thu": "Th", "thursday": "Th",
    "fr": "Fr", "fri": "Fr", "friday": "Fr", "sa": "Sa", "sat": "Sa", "saturday": "Sa",
    "su": "Su", "sun": "Su", "sunday": "Su",
}
_NTH = {"1st": 1, "2nd": 2, "3rd": 3, "4th": 4, "5th": 5, "last": -1, "first": 1, "second": 2, "third": 3,
        "fourth": 4, "fifth": 5}
_HHMM = re.compile(r"^(\d{1,2}):(\d{2})$")
_DATE = re.compile(r"^(?:(\d{4})-)?(\d{2})-(\d{2})$")


class Unsupported(ValueError):
    """A time span the opening_hours syntax (or this converter) cannot express."""


def _clock(value: object, *, end: bool) -> str:
    match = _HHMM.match(str(value).strip())
    if not match or int(match.group(1)) > 24 or int(match.group(2)) > 59:
        raise Unsupported(f"time '{value}' is not HH:MM")
    hours, minutes = int(match.group(1)), int(match.group(2))
    # Feeds write the end of the day as 23:59 or 00:00; both mean midnight.
    if end and ((hours, minutes) == (23, 59) or (hours, minutes) == (0, 0)):
        return "24:00"
    return f"{hours:02d}:{minutes:02d}"


def times_of_day(pairs: Iterable[tuple[object, object]]) -> str:
    """``[("08:00", "19:00"), ...]`` → ``08:00-19:00,...``."""
    out = []
    for start, stop in pairs:
        a = _clock(start if start not in (None, "") else "00:00", end=False)
        b = _clock(stop if stop not in (None, "") else "24:00", end=True)
        out.append("00:00-24:00" if a == b else f"{a}-{b}")
    return ",".join(out)


def weekdays(days: Iterable[object], occurrences: Iterable[object] = ()) -> str:
    """``["mo", "tu"]`` (+ ``["2nd", "last"]``) → ``Mo,Tu`` (``Mo[2,-1],Tu[2,-1]``)."""
    names = []
    for day in days:
        name = _DAYS.get(str(day).strip().lower())
        if name is None:
            raise Unsupported(f"day '{day}' is not a day of the week")
        if name not in names:
            names.append(name)
    nth = []
    for occ in occurrences or ():
        number = _NTH.get(str(occ).strip().lower())
        if number is None:
            raise Unsupported(f"occurrence '{occ}' is not 1st-5th or last")
        nth.append(str(number))
    suffix = f"[{','.join(nth)}]" if nth else ""
    return ",".join(name + suffix for name in names)


def _date(value: object) -> tuple[str | None, str, str]:
    match = _DATE.match(str(value).strip())
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise Unsupported(f"date '{value}' is not YYYY-MM-DD or MM-DD")
    return match.group(1), MONTHS[int(match.group(2)) - 1], match.group(3)


def date_range(start: object, stop: object) -> str:
    """``2019-07-19``..``2020-01-10`` → ``2019 Jul 19-2020 Jan 10``; ``12-01``..``03-31`` → ``Dec 01-Mar 31``."""
    y1, m1, d1 = _date(start)
    y2, m2, d2 = _date(stop if stop not in (None, "") else start)
    if (y1 is None) != (y2 is None):
        raise Unsupported("a date range mixes a fixed date and a yearly date")
    first = f"{y1} {m1} {d1}" if y1 else f"{m1} {d1}"
    last = f"{y2} {m2} {d2}" if y2 else f"{m2} {d2}"
    return first if first == last else f"{first}-{last}"


def month_list(months: Iterable[object]) -> str:
    """``[1, 3]`` → ``Jan,Mar``."""
    out = []
    for month in months:
        try:
            number = int(month)
        except (TypeError, ValueError):
            raise Unsupported(f"month '{month}' is not 1-12") from None
        if not 1 <= number <= 12:
            raise Unsupported(f"month '{month}' is not 1-12")
        out.append(MONTHS[number - 1])
    return ",".join(out)


def month_days(days: Iterable[object], months: Iterable[object] = ()) -> str:
    """Days of the month (``[14, 15]``), optionally within months → ``Jan 14,Jan 15,Feb 14,...``."""
    numbers = []
    for day in days:
        text = str(day).strip().lower()
        if not text.isdigit() or not 1 <= int(text) <= 31:
            raise Unsupported(f"day of month '{day}' is not supported (only 1-31)")
        numbers.append(int(text))
    chosen = [MONTHS[int(m) - 1] for m in months] if months else list(MONTHS)
    return ",".join(f"{m} {d:02d}" for m in chosen for d in numbers)


def span(*parts: str | None) -> str | None:
    """All the parts of one time span (``None`` when it is "always")."""
    text = " ".join(p for p in parts if p)
    return text or None


def combine(spans: list[str | None], except_holidays: bool = False) -> str | None:
    """OR of several spans; ``None`` (always) if any span is always and there is no holiday exception."""
    if not spans:
        return None
    if any(s is None for s in spans):
        return "24/7; PH off" if except_holidays else None
    text = ", ".join(s for s in spans if s)
    return f"{text}; PH off" if except_holidays else text

