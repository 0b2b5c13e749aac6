"""Rules (operator): create, read, list, change and delete them.

Every rule is checked whole by :func:`smartsvc.rules.validate_rule` before it
is stored — a change (PATCH) is merged into the stored rule first — so a
stored rule is always one the workers can run. Every write runs in one
transaction that first bumps the ``rule_versions`` counter: on PostgreSQL its
row lock makes rule writers take turns (so the count limit holds), and every
process learns from the new version that its cached rule set is stale (see
:mod:`smartsvc.services.rule_set`).

Rules are in one operator namespace, like geofences: every operator key sees
and edits every rule; ``created_by`` only records which key made one.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, Mapping

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from ..db import Database
from ..errors import ApiError, Conflict, NotFound
from ..models import Rule, RuleVersion
from ..rules import normalize_rule, validate_rule
from ..timeutil import utcnow
from .pagination import Page, keyset_page

log = logging.getLogger(__name__)

VERSION_ROW = 1
EDITABLE = ("name", "trigger", "conditions", "action", "priority", "cooldown_s", "enabled")


class RuleRejected(ApiError):
    """422: the rule cannot be saved; ``errors`` names every offending field by its path."""

    status = 422
    title = "Unprocessable Content"

    def __init__(self, issues: list[tuple[str, str]]) -> None:
        errors: dict[str, list[str]] = {}
        for path, message in issues:
            errors.setdefault(path, []).append(message)
        detail = "; ".join(f"{name}: {' '.join(messages)}" for name, messages in errors.items())
        super().__init__(detail, errors=errors)


def _valid(data: Mapping[str, Any]) -> dict[str, Any]:
    """The rule as stored, or :class:`RuleRejected` listing every problem."""
    issues = validate_rule(data)
    if issues:
        raise RuleRejected(issues)
    return normalize_rule(data)


def stored_fields(rule: Rule) -> dict[str, Any]:
    """The stored rule as input fields (what a PATCH is merged into)."""
    return {"name": rule.name, "trigger": rule.trigger, "conditions": rule.conditions, "action": rule.action,
            "priority": rule.priority, "cooldown_s": rule.cooldown_s, "enabled": rule.enabled}


def _apply(rule: Rule, valid: Mapping[str, Any]) -> None:
    for name in EDITABLE:
        setattr(rule, name, valid[name])
    rule.trigger_event = valid["trigger"]["event"]


def bump_version(session: Session) -> None:
    """Count one more rule change (in the caller's transaction), creating the counter row if it is gone."""
    now = utcnow()
    bump = update(RuleVersion).where(RuleVersion.id == VERSION_ROW).values(
        version=RuleVersion.version + 1, changed_at=now)
    if getattr(session.execute(bump), "rowcount", 1):
        return
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(insert(RuleVersion).values(id=VERSION_ROW, version=0, changed_at=now)
                    .on_conflict_do_nothing(index_elements=["id"]))
    session.execute(bump)


def rule_version(session: Session) -> int:
    """The current rule change counter (0 before any change)."""
    return session.scalar(select(RuleVersion.version).where(RuleVersion.id == VERSION_ROW)) or 0


def create_rule(database: Database, data: Mapping[str, Any], *, created_by: str | None, max_rules: int) -> Rule:
    """Store a new rule (422 naming every problem; 409 past ``max_rules``)."""
    valid = _valid(data)
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        bump_version(session)  # first: the counter row lock serialises writers before the count is read
        count = session.scalar(select(func.count()).select_from(Rule)) or 0
        if count >= max_rules:
            message = f"there are {count:,} rules, the limit (SMARTSVC_MAX_RULES); delete some first"
            raise Conflict(message, errors={"rules": [message]})
        now = utcnow()
        rule = Rule(created_by=created_by, created_at=now, updated_at=now)
        _apply(rule, valid)
        session.add(rule)
        uow.commit()
    log.info("rule created", extra={"rule_id": str(rule.id), "trigger": rule.trigger_event})
    return rule


def get_rule(database: Database, rule_id: uuid.UUID) -> Rule:
    """One rule, or 404."""
    with database.session() as session:
        rule = session.get(Rule, rule_id)
    if rule is None:
        raise NotFound(f"rule {rule_id} does not exist")
    return rule


def list_rules(
    database: Database, *, enabled: bool | None, event: str | None, limit: int, cursor: uuid.UUID | None
) -> Page[Rule]:
    """Rules in creation order, optionally only enabled (or disabled) ones, or those of one trigger event."""
    query = select(Rule)
    if enabled is not None:
        query = query.where(Rule.enabled.is_(enabled))
    if event is not None:
        query = query.where(Rule.trigger_event == event)
    with database.session() as session:
        return keyset_page(session, query, Rule.id, limit=limit, after=cursor)


def update_rule(database: Database, rule_id: uuid.UUID, changes: Mapping[str, Any]) -> Rule:
    """Apply a partial change (PATCH); the changed rule is validated as a whole, 404 when it does not exist.

    A field given replaces the stored one whole (``conditions``, ``action``
    and ``trigger`` included): nothing is merged inside them.
    """
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        bump_version(session)  # the same lock order as create and delete: counter row, then the rule
        rule = session.get(Rule, rule_id, with_for_update=True, populate_existing=True)
        if rule is None:
            raise NotFound(f"rule {rule_id} does not exist")
        valid = _valid({**stored_fields(rule), **changes})
        _apply(rule, valid)
        rule.updated_at = utcnow()
        uow.commit()
    log.info("rule updated", extra={"rule_id": str(rule_id), "fields": sorted(changes)})
    return rule


def delete_rule(database: Database, rule_id: uuid.UUID) -> None:
    """Delete a rule and the users' scores of it."""
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        bump_version(session)
        rule = session.get(Rule, rule_id, with_for_update=True)
        if rule is None:
            raise NotFound(f"rule {rule_id} does not exist")
        session.delete(rule)
        uow.commit()
    log.info("rule deleted", extra={"rule_id": str(rule_id)})
