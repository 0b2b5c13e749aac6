"""The attention budget (SUGGESTIONS.md "Attention budget"): push now, wait for the end of quiet hours, or not.

The time logic (quiet hours and the local day in the user's IANA time zone,
across midnight and daylight-saving changes) is pure and at the top; the
budget itself (:func:`judge`) reads what was pushed already. Checks run in the
order of docs/engine.md section 4, the first that holds deciding.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from sqlalchemy import func, null, select
from sqlalchemy.orm import Session

from ..models import Consent, Suggestion, User, UserRuleScore

PUSH, DEFER, SUPPRESS = "push", "defer", "suppress"

NO_CONSENT = "no consent to proactive pushes"
ALREADY_SENT = "already sent"
QUIET_TOO_LATE = "quiet hours; it would have expired before they end"


# --------------------------------------------------------------------------- time in the user's zone


def parse_hhmm(value: str) -> time:
    """``"22:00"`` → ``time(22, 0)``."""
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def local_instant(day: date, wall: time, zone: ZoneInfo) -> datetime:
    """The first UTC instant at which the clock in ``zone`` shows ``wall`` (or later) on ``day``.

    A wall time that happens twice (clocks turned back) is its first
    occurrence; one that does not happen (clocks turned forward) is the
    moment of the jump, when the clock passes it.
    """
    naive = datetime.combine(day, wall)
    first = naive.replace(tzinfo=zone, fold=0).astimezone(timezone.utc)
    if first.astimezone(zone).replace(tzinfo=None) == naive:
        return first
    # In a gap: the jump lies between the two readings of the wall time; find it to the second.
    low = naive.replace(tzinfo=zone, fold=1).astimezone(timezone.utc)
    high = first
    if low > high:
        low, high = high, low
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).replace(tzinfo=None) >= naive:
            high = middle
        else:
            low = middle
    return high.replace(microsecond=0) if high.microsecond else high


def quiet_hours_end(now: datetime, zone_name: str, start: str | None, end: str | None) -> datetime | None:
    """When the quiet hours that ``now`` falls in end (UTC); None outside them or without quiet hours.

    ``start``/``end`` are local ``HH:MM``; a window with ``start`` after
    ``end`` runs across midnight. ``start == end`` is an empty window.
    """
    if not start or not end or start == end:
        return None
    zone = ZoneInfo(zone_name)
    begin_wall, end_wall = parse_hhmm(start), parse_hhmm(end)
    today = now.astimezone(zone).date()
    # The window that began yesterday (across midnight) may still be running, so look at both.
    for day in (today - timedelta(days=1), today):
        begins = local_instant(day, begin_wall, zone)
        ends = local_instant(day if end_wall > begin_wall else day + timedelta(days=1), end_wall, zone)
        if begins <= now < ends:
            return ends
    return None


def local_day(now: datetime, zone_name: str) -> tuple[datetime, datetime]:
    """The user's local day around ``now`` as UTC ``[start, end)`` (23 or 25 hours on DST days)."""
    zone = ZoneInfo(zone_name)
    today = now.astimezone(zone).date()
    return local_instant(today, time(0), zone), local_instant(today + timedelta(days=1), time(0), zone)


# --------------------------------------------------------------------------- the budget


@dataclass(frozen=True)
class Verdict:
    """What the budget decided: ``push`` now, ``defer`` until ``deliver_after``, or ``suppress`` (``reason``)."""

    action: str
    reason: str | None = None
    deliver_after: datetime | None = None


@dataclass(frozen=True)
class Candidate:
    """What the budget needs to know about a suggestion (new or already stored)."""

    user_id: uuid.UUID
    rule_id: uuid.UUID | None
    rule_name: str | None
    cooldown_s: int
    content_hash: str
    expires_at: datetime
    # Set for a stored suggestion, so that it does not count against itself.
    suggestion_id: uuid.UUID | None = None


def _others(candidate: Candidate) -> list:
    clauses = [Suggestion.user_id == candidate.user_id, Suggestion.pushed_at.is_not(None)]
    if candidate.suggestion_id is not None:
        clauses.append(Suggestion.id != candidate.suggestion_id)
    return clauses


def _rule_label(candidate: Candidate) -> str:
    return f"“{candidate.rule_name}”" if candidate.rule_name else "this rule"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


@dataclass(frozen=True)
class _Record:
    """What the budget reads about the user: the consent, the rule's mute, and what was pushed already."""

    consent: bool
    muted_dismissals: int | None  # set when the user muted the candidate's rule
    sent_same_content: bool
    last_push_of_rule: datetime | None
    pushed_today: int


def _record(session: Session, user: User, candidate: Candidate, day: tuple[datetime, datetime]) -> _Record:
    """Everything :func:`judge` reads, in one statement (a round trip each was most of a decision's time)."""
    others = _others(candidate)
    consent = select(Consent.granted).where(Consent.user_id == user.id, Consent.purpose == "proactive_push")
    muted = null()
    if candidate.rule_id is not None:
        muted = select(UserRuleScore.dismissals).where(
            UserRuleScore.user_id == user.id, UserRuleScore.rule_id == candidate.rule_id,
            UserRuleScore.muted_at.is_not(None)).scalar_subquery()
    last = null()
    if candidate.rule_id is not None and candidate.cooldown_s > 0:
        last = select(func.max(Suggestion.pushed_at)).where(
            *others, Suggestion.rule_id == candidate.rule_id).scalar_subquery()
    row = session.execute(select(
        consent.scalar_subquery(),
        muted,
        select(Suggestion.id).where(*others, Suggestion.content_hash == candidate.content_hash).exists(),
        last,
        select(func.count()).select_from(Suggestion).where(
            *others, Suggestion.pushed_at >= day[0], Suggestion.pushed_at < day[1]).scalar_subquery(),
    )).one()
    return _Record(bool(row[0]), row[1], bool(row[2]), row[3], row[4] or 0)


def judge(session: Session, user: User, candidate: Candidate, now: datetime) -> Verdict:
    """Apply the budget to ``candidate`` at ``now``; the caller holds the user's row lock."""
    record = _record(session, user, candidate, local_day(now, user.time_zone))
    if not record.consent:
        return Verdict(SUPPRESS, NO_CONSENT)
    if record.muted_dismissals is not None:
        return Verdict(SUPPRESS, f"muted: you dismissed {_rule_label(candidate)} {record.muted_dismissals} times "
                                 "in a row (accept one of its suggestions to hear from it again)")
    if record.sent_same_content:
        return Verdict(SUPPRESS, ALREADY_SENT)
    last = record.last_push_of_rule
    if last is not None and last > now - timedelta(seconds=candidate.cooldown_s):
        return Verdict(SUPPRESS, f"cooldown: {_rule_label(candidate)} pushed to you at {last.isoformat()} "
                                 f"and waits {_duration(candidate.cooldown_s)} between pushes")
    if record.pushed_today >= user.max_pushes_per_day:
        return Verdict(SUPPRESS, f"daily limit: {user.max_pushes_per_day} pushes a day reached")
    quiet_end = quiet_hours_end(now, user.time_zone, user.quiet_hours_start, user.quiet_hours_end)
    if quiet_end is not None:
        if candidate.expires_at > quiet_end:
            return Verdict(DEFER, f"waiting for the end of quiet hours ({user.quiet_hours_end})", quiet_end)
        return Verdict(SUPPRESS, QUIET_TOO_LATE)
    return Verdict(PUSH)
