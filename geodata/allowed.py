"""May a member of the public park here from ``at`` for ``duration`` minutes? (GEODATA.md "Allowed now")

The first rule whose ``when`` matches a moment decides that moment. A stay of
``d`` minutes starting at ``t`` is allowed when at every moment of [t, t+d)
the deciding rule is public parking whose ``max_stay_min`` is unset or ≥ d.
``allowed_until`` is the first moment after ``t`` at which a stay begun at
``t`` stops being allowed (``None`` when it holds for the next 7 days).

Rule windows are OSM ``opening_hours`` strings evaluated by opening-hours-py
in the dataset's time zone. Internally every instant is a UTC timestamp, so
durations are real elapsed time across DST changes; wall-clock times are only
used to talk to the opening_hours evaluator and to write reasons. A naive
``at`` is wall-clock time in the dataset's zone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Sequence
from zoneinfo import ZoneInfo

from opening_hours import OpeningHours, State

from geodata.model import Rate, Rule

HORIZON_S = 7 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer for one rule list, start time and duration."""

    allowed: bool
    allowed_until: datetime | None
    max_stay_min: float | None
    fee: bool
    rate: Rate | None
    why: tuple[str, ...]


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    """The ZoneInfo for an IANA name (cached)."""
    return ZoneInfo(name)


@lru_cache(maxsize=16384)
def compile_when(when: str, tz: str, country: str | None = None) -> OpeningHours:
    """Parse an opening_hours expression once per (expression, zone, country)."""
    return OpeningHours(when, timezone=zone(tz), country=country, auto_country=False, auto_timezone=False)


def describe_rule(rule: Rule | None) -> str:
    """What a rule means for a driver without permits, in words."""
    if rule is None:
        return "no rule allows parking"
    if rule.activity == "parking":
        if rule.access == "public":
            return "paid parking" if rule.fee else "free parking"
        return {
            "residents": "parking for residents only",
            "customers": "parking for customers only",
            "permit": "parking for permit holders only",
            "disabled": "parking for disabled badge holders only",
        }.get(rule.access, "private parking")
    return {"no_parking": "no parking", "no_stopping": "no stopping", "loading": "loading zone"}.get(
        rule.activity, rule.activity
    )


def _clock(ts: float, tz: ZoneInfo, start: datetime) -> str:
    local = datetime.fromtimestamp(ts, tz)
    if local.date() == start.date():
        return local.strftime("%H:%M")
    if ts - start.timestamp() < 6 * 86400:
        return local.strftime("%a %H:%M")
    return local.strftime("%a %d %b %H:%M")


class RuleSet:
    """A rule list compiled for one time zone; cheap to evaluate many times."""

    __slots__ = ("rules", "tz_name", "tz", "country", "_hours", "never")

    def __init__(self, rules: Sequence[Rule], tz: str = "UTC", country: str | None = None) -> None:
        self.rules = tuple(rules)
        self.tz_name = tz
        self.tz = zone(tz)
        self.country = country
        self._hours = tuple(None if r.when is None else compile_when(r.when, tz, country) for r in self.rules)
        # No public-parking rule at all: nothing to evaluate, never allowed.
        self.never = not any(r.permits_public_parking for r in self.rules)

    def local(self, at: datetime) -> datetime:
        """``at`` as an aware datetime in this rule set's zone (naive = local wall time)."""
        if at.tzinfo is None:
            at = at.replace(tzinfo=self.tz)
            # Round-trip through UTC so that wall times skipped by DST land on a real instant.
            return datetime.fromtimestamp(at.timestamp(), self.tz)
        return at.astimezone(self.tz)

    def _deciding(self, moment: datetime) -> tuple[int | None, bool]:
        for i, hours in enumerate(self._hours):
            if hours is None:
                return i, False
            state = hours.state(moment)[0]
            if state == State.OPEN:
                return i, False
            if state == State.UNKNOWN:
                return i, True
        return None, False

    def _next_change(self, moment: datetime, upto: int | None) -> float:
        last = len(self._hours) - 1 if upto is None else upto
        best = math.inf
        for hours in self._hours[: last + 1]:
            if hours is not None:
                change = hours.next_change(moment)
                if change is not None:
                    best = min(best, change.timestamp())
        return best

    def evaluate(self, at: datetime, duration_min: float) -> Decision:
        """Decide a stay of ``duration_min`` minutes starting at ``at``."""
        start = self.local(at)
        t0 = start.timestamp()
        want_s = max(float(duration_min), 0.0) * 60.0
        horizon = t0 + HORIZON_S
        segments: list[tuple[float, float, Rule]] = []
        cap_s = math.inf
        moment_ts = t0
        until_s: float | None
        failure = ""
        while True:
            moment = start if moment_ts == t0 else datetime.fromtimestamp(moment_ts, self.tz)
            index, unknown = self._deciding(moment)
            rule = None if index is None else self.rules[index]
            elapsed = moment_ts - t0
            if rule is None or unknown or not rule.permits_public_parking:
                until_s = elapsed
                what = "the rules are unclear" if unknown else describe_rule(rule)
                failure = f"{what} now" if elapsed == 0 else f"{what} from {_clock(moment_ts, self.tz, start)}"
                break
            end = min(self._next_change(moment, index), horizon)
            if end <= moment_ts:  # defensive: never loop on a zero-length interval
                end = moment_ts + 60.0
            segments.append((moment_ts, end, rule))
            if rule.max_stay_min is not None:
                cap_s = min(cap_s, rule.max_stay_min * 60.0)
            if cap_s <= elapsed:
                until_s = elapsed
                failure = f"max stay {cap_s / 60:g} min from {_clock(moment_ts, self.tz, start)}"
                break
            if t0 + cap_s <= end:
                until_s = cap_s
                failure = f"max stay {cap_s / 60:g} min"
                break
            if end >= horizon:
                until_s = None
                break
            moment_ts = end
        allowed = until_s is None or (until_s > 0 and until_s >= want_s)
        inside = [s for s in segments if s[0] < t0 + max(want_s, 1.0)]
        stays = [s[2].max_stay_min for s in inside if s[2].max_stay_min is not None]
        fee = any(s[2].fee for s in inside)
        rate = next((s[2].rate for s in inside if s[2].rate is not None), None)
        why = [self._segment_words(s, start, horizon) for s in inside[:3]]
        if not allowed:
            if until_s and failure.startswith("max stay") and until_s < want_s:
                failure = f"{failure}, shorter than the {want_s / 60:g} min asked"
            why.append(failure)
        until = None if until_s is None else datetime.fromtimestamp(t0 + until_s, self.tz)
        return Decision(allowed, until, min(stays) if stays else None, fee, rate, tuple(why))

    def _segment_words(self, segment: tuple[float, float, Rule], start: datetime, horizon: float) -> str:
        _, end, rule = segment
        words = describe_rule(rule)
        if end < horizon:
            words += f" until {_clock(end, self.tz, start)}"
        if rule.max_stay_min is not None:
            words += f", max stay {rule.max_stay_min:g} min"
        if rule.rate is not None:
            words += f" ({rule.rate.describe()})"
        return words


def evaluate(
    rules: Sequence[Rule], at: datetime, duration_min: float, tz: str = "UTC", country: str | None = None
) -> Decision:
    """Decide a stay for a rule list (compiles the rules; use :class:`RuleSet` on hot paths)."""
    return RuleSet(rules, tz, country).evaluate(at, duration_min)

