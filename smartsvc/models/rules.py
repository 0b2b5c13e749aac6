"""Operator rules (SUGGESTIONS.md "Rules"), the counter that tells processes their cached rule set is stale,
and what each user's feedback made of each rule.

A rule's ``trigger``, ``conditions`` and ``action`` are stored as validated and
normalized by :mod:`smartsvc.rules`; ``trigger_event`` repeats the trigger's
event as a column so that lists can filter on it on every database.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, created_column, id_column


class Rule(Base):
    """One rule: when ``trigger`` fires and ``conditions`` hold, run ``action``'s recipe."""

    __tablename__ = "rules"
    __table_args__ = (Index("ix_rules_trigger_event_id", "trigger_event", "id"),)

    id: Mapped[uuid.UUID] = id_column()
    name: Mapped[str] = mapped_column(String(200))
    trigger_event: Mapped[str] = mapped_column(String(40))
    trigger: Mapped[dict[str, Any]] = mapped_column()
    conditions: Mapped[dict[str, Any]] = mapped_column()
    action: Mapped[dict[str, Any]] = mapped_column()
    priority: Mapped[int] = mapped_column(Integer, default=0)
    cooldown_s: Mapped[int] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = created_column()
    updated_at: Mapped[datetime] = created_column()


class RuleVersion(Base):
    """One row whose ``version`` grows with every rule create, update and delete (same transaction).

    Each process compares it (one primary-key read) with the version its
    cached rule set was loaded at, like ``live_layers.version``.
    """

    __tablename__ = "rule_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(BigInteger, default=0)
    changed_at: Mapped[datetime | None] = mapped_column()


class UserRuleScore(Base):
    """How much a user still wants a rule: dismissals lower ``score``; a muted rule stops pushing to them."""

    __tablename__ = "user_rule_scores"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    # Indexed: deleting a rule removes its scores (ON DELETE CASCADE) without a scan.
    rule_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("rules.id", ondelete="CASCADE"), primary_key=True,
                                               index=True)
    score: Mapped[float] = mapped_column(Float, default=1.0, server_default=text("1.0"))
    dismissals: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    muted_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = created_column()
