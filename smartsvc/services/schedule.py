"""The scheduler: ``schedule`` rules fire once a day per user, at the rule's local time in the user's time zone.

Beat runs :func:`run_schedules` every minute. For each enabled ``schedule``
rule (``{"at": "HH:MM", "weekdays"?: [1..7]}``), the users whose local time
has reached ``at`` today (on one of ``weekdays``) and who have no trigger of
that rule for their local date get one: ``emit_trigger`` with ``rule_id``,
``at`` the scheduled moment, ``fields`` ``{"at": "HH:MM"}`` and dedupe key
``schedule:{rule_id}:{user_id}:{local date}``. A minute missed (beat down)
still fires later the same local day; a whole local day missed does not
fire on the next (that day's own schedule does). Only users who existed at
the scheduled moment are due, so a user created in the evening does not get
the morning's check.

Cost per run, without walking users one by one in Python:
- the rule set (the process's :class:`~smartsvc.services.rule_set.RuleCache`:
  one primary-key read); no ``schedule`` rule → nothing else is read;
- one ``SELECT DISTINCT time_zone FROM users`` (a scan of ``users``);
- per (time zone, rule) that is due and not known done today: one query for
  the users of that zone without that day's trigger (``NOT EXISTS`` on
  ``triggers (user_id, at)``, indexed), :data:`BATCH` at a time, each batch
  written in its own transaction.
A (zone, rule, local date) found with nobody missing is remembered in the
process (:class:`ScheduleMemo`): nobody can become due there later that day
(new users are not due), so for the rest of the day the run costs the first
two reads only. ``users.time_zone`` has no index of its own: the per-zone
query scans ``users`` once per zone and rule per day; an index there would
make it proportional to the zone's users.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Iterable
from zoneinfo import ZoneInfo

from sqlalchemy import and_, exists, select

from ..db import Database
from ..models import TriggerRecord, User
from ..timeutil import is_valid_time_zone, utcnow
from .rule_set import ActiveRule, RuleCache
from .triggers import emit_trigger

log = logging.getLogger(__name__)

BATCH = 1000
EVENT = "schedule"


@dataclass(frozen=True)
class DueSlot:
    """One rule due in one time zone today: the local date, and the scheduled moment in UTC."""

    rule: ActiveRule
    time_zone: str
    local_date: date
    at: datetime  # the scheduled local time of that date, in UTC
    day_start: datetime  # the local date's bounds, in UTC
    day_end: datetime

    @property
    def memo_key(self) -> tuple[Any, ...]:
        # The rule's trigger is part of the key: a rule moved to a later time is looked at again.
        return (self.rule.id, str(self.rule.trigger.get("at")), self.time_zone, self.local_date)


class ScheduleMemo:
    """The (rule, zone, local date) slots this process has found done; forgets older days."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done: set[tuple[Any, ...]] = set()

    def is_done(self, slot: DueSlot) -> bool:
        return slot.memo_key in self._done

    def mark_done(self, slot: DueSlot) -> None:
        with self._lock:
            # Slots of days long past are dropped so the memo stays small.
            self._done = {key for key in self._done if key[3] >= slot.local_date - timedelta(days=2)}
            self._done.add(slot.memo_key)


def _wall_time(value: Any) -> time | None:
    try:
        hours, minutes = str(value).split(":")
        return time(int(hours), int(minutes))
    except (TypeError, ValueError):
        return None


def due_slot(rule: ActiveRule, zone_name: str, now: datetime) -> DueSlot | None:
    """The rule's slot in ``zone_name`` when its local time has been reached today (and the weekday is one
    of its ``weekdays``); None otherwise."""
    at = _wall_time(rule.trigger.get("at"))
    if at is None:
        return None
    zone = ZoneInfo(zone_name)
    local = now.astimezone(zone)
    weekdays = rule.trigger.get("weekdays")
    if weekdays and local.isoweekday() not in weekdays:
        return None
    if local.time().replace(second=0, microsecond=0) < at:
        return None
    today = local.date()
    midnight = datetime.combine(today, time(0), zone)
    next_midnight = datetime.combine(today + timedelta(days=1), time(0), zone)
    return DueSlot(rule, zone_name, today, datetime.combine(today, at, zone).astimezone(timezone.utc),
                   midnight.astimezone(timezone.utc), next_midnight.astimezone(timezone.utc))


def _missing_users(session: Any, slot: DueSlot) -> list[uuid.UUID]:
    """Users of the slot's zone, existing at the scheduled moment, without the rule's trigger that local day."""
    fired = exists().where(and_(
        TriggerRecord.user_id == User.id, TriggerRecord.rule_id == slot.rule.id, TriggerRecord.event == EVENT,
        TriggerRecord.at >= slot.day_start, TriggerRecord.at < slot.day_end))
    return list(session.scalars(
        select(User.id).where(User.time_zone == slot.time_zone, User.created_at <= slot.at, ~fired)
        .order_by(User.id).limit(BATCH)))


def dedupe_key(rule_id: uuid.UUID, user_id: uuid.UUID, local_date: date) -> str:
    """The trigger's dedupe key: one per rule, user and local date."""
    return f"schedule:{rule_id}:{user_id}:{local_date.isoformat()}"


def _fire(database: Database, slot: DueSlot) -> int:
    fired = 0
    while True:
        with database.unit_of_work() as uow:
            session = uow.session
            assert session is not None
            users = _missing_users(session, slot)
            for user_id in users:
                if emit_trigger(uow, user_id=user_id, event=EVENT, at=slot.at,
                                dedupe_key=dedupe_key(slot.rule.id, user_id, slot.local_date),
                                fields={"at": str(slot.rule.trigger["at"])}, rule_id=slot.rule.id) is not None:
                    fired += 1
            uow.commit()
        if len(users) < BATCH:
            return fired


def _zones(session: Any) -> list[str]:
    names = session.scalars(select(User.time_zone).distinct())
    return sorted(name for name in names if name and is_valid_time_zone(name))


def run_schedules(database: Database, rule_cache: RuleCache, memo: ScheduleMemo | None = None,
                  now: datetime | None = None) -> int:
    """Emit the ``schedule`` triggers due at ``now`` (default: the current time); how many were written.

    Idempotent: running it twice (two beats, a redelivered task) writes each
    trigger once (the ``NOT EXISTS`` and, for a race, the dedupe key).
    """
    now = now or utcnow()
    memo = memo if memo is not None else ScheduleMemo()
    with database.session() as session:
        rules = rule_cache.current(session).rules_for(EVENT)
        zones = _zones(session) if rules else []
    fired = 0
    for zone_name in zones:
        for slot in _slots(rules, zone_name, now):
            if memo.is_done(slot):
                continue
            count = _fire(database, slot)
            fired += count
            if count == 0:
                memo.mark_done(slot)
    if fired:
        log.info("schedule triggers emitted", extra={"triggers": fired})
    return fired


def _slots(rules: Iterable[ActiveRule], zone_name: str, now: datetime) -> Iterable[DueSlot]:
    for rule in rules:
        slot = due_slot(rule, zone_name, now)
        if slot is not None:
            yield slot
