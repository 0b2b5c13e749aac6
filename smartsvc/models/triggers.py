"""Triggers: situations the context engine noticed for a user, waiting for the rules to run on them.

A trigger is written in the transaction that noticed it (a context batch, a
telemetry reading, the scheduler) together with an outbox message that runs
the rules on it; ``dedupe_key`` makes noticing the same situation twice (a
batch sent again, a task run twice) write one trigger.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, created_column, id_column


class TriggerRecord(Base):
    """One trigger event for one user (SUGGESTIONS.md "Triggers the engine derives")."""

    __tablename__ = "triggers"
    __table_args__ = (Index("ix_triggers_user_id_at", "user_id", "at"),)

    id: Mapped[uuid.UUID] = id_column()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # One of smartsvc.rules.triggers.TRIGGER_EVENTS.
    event: Mapped[str] = mapped_column(String(40))
    # Set when the trigger concerns one rule only (trip.approaching at that rule's distance, a rule's schedule).
    rule_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("rules.id", ondelete="CASCADE"))
    product_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("owned_products.id", ondelete="CASCADE"))
    # The trigger's own fields: the rules' ``event.*`` facts without the prefix (see smartsvc.rules.facts).
    fields: Mapped[dict[str, Any]] = mapped_column()
    # When the situation happened (the event's ``at``, not when it was noticed).
    at: Mapped[datetime] = mapped_column()
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = created_column()
    # Set, in the transaction of their effects, when the rules have run on it.
    processed_at: Mapped[datetime | None] = mapped_column()
