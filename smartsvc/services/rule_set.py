"""The enabled rules, cached in each process and reloaded when the ``rule_versions`` counter moves.

Workers evaluate rules on every event; reading them all each time would cost
a query of every rule per event. Each process (API worker, Celery worker)
holds a :class:`RuleCache` on its container: :meth:`RuleCache.current` reads
the counter (one primary-key read) and reloads the rules only when a rule was
created, changed or deleted since. A :class:`RuleSet` is immutable, so a
caller keeps a consistent set for the whole of its work.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import Rule
from .rules import rule_version


@dataclass(frozen=True)
class ActiveRule:
    """An enabled rule as the engine runs it (validated and normalized when it was saved)."""

    id: uuid.UUID
    name: str
    trigger: Mapping[str, Any]
    conditions: Mapping[str, Any]
    action: Mapping[str, Any]
    priority: int
    cooldown_s: int

    @property
    def event(self) -> str:
        """The trigger event the rule waits for."""
        return str(self.trigger["event"])


@dataclass(frozen=True)
class RuleSet:
    """The enabled rules at one version of the counter, by trigger event, highest priority first."""

    version: int
    by_event: Mapping[str, tuple[ActiveRule, ...]] = field(default_factory=dict)

    def rules_for(self, event_type: str) -> tuple[ActiveRule, ...]:
        """The enabled rules triggered by ``event_type``, by priority (highest first), then age (oldest first)."""
        return self.by_event.get(event_type, ())

    def __len__(self) -> int:
        return sum(len(rules) for rules in self.by_event.values())


def load_rule_set(session: Session, version: int) -> RuleSet:
    """Every enabled rule, read in ``session``, as the set of ``version``."""
    rows = session.scalars(select(Rule).where(Rule.enabled.is_(True)))
    grouped: dict[str, list[ActiveRule]] = {}
    for row in rows:
        rule = ActiveRule(id=row.id, name=row.name, trigger=row.trigger, conditions=row.conditions,
                          action=row.action, priority=row.priority, cooldown_s=row.cooldown_s)
        grouped.setdefault(rule.event, []).append(rule)
    # Ids are time-ordered: among equal priorities the older rule comes first, the same in every process.
    return RuleSet(version, {event: tuple(sorted(rules, key=lambda r: (-r.priority, r.id)))
                             for event, rules in grouped.items()})


class RuleCache:
    """This process's rule set, reloaded when the counter says it is stale."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: RuleSet | None = None

    def current(self, session: Session) -> RuleSet:
        """The rule set as of now: the cached one, or a fresh load when a rule changed since."""
        # The counter is read before the rules: a set is never older than the version it is filed under.
        version = rule_version(session)
        held = self._held
        if held is not None and held.version == version:
            return held
        with self._lock:
            held = self._held
            if held is None or held.version != version:
                held = self._held = load_rule_set(session, version)
        return held
