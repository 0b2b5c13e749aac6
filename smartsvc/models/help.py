"""Help on demand ("Mayday", TRUST.md): a user's help case and its conversation with agents.

A :class:`HelpCase` carries the snapshot of the user's context taken when
it was opened (products and telemetry, location where consented, the
screen, recent suggestions and interactions), so that the agent never asks
what the system already knew. Each :class:`HelpMessage` is one turn of the
conversation, from the user or from an agent (whose answer may carry
guidance for the app: ``{"screen", "highlight"}``).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, created_column, id_column

# open: waiting for an agent; answered: an agent wrote last; closed: solved.
HELP_STATUSES = ("open", "answered", "closed")
HELP_AUTHORS = ("user", "agent")


class HelpCase(Base):
    """One request for help, with the context snapshot and the effort it took (customer effort metrics)."""

    __tablename__ = "help_cases"
    __table_args__ = (
        # The user's cases, newest first, and the open ones they may have at most.
        Index("ix_help_cases_user_id_id", "user_id", "id"),
        # The agents' queue: cases of a status, oldest first.
        Index("ix_help_cases_status_id", "status", "id"),
    )

    id: Mapped[uuid.UUID] = id_column()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))
    topic: Mapped[str | None] = mapped_column(String(100))
    # The app screen the user asked from (as sent, else the last one the app reported).
    screen: Mapped[str | None] = mapped_column(String(200))
    # The product the user asked about; the case stays when the product is removed.
    product_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("owned_products.id", ondelete="SET NULL"))
    # The user's context when the case was opened (smartsvc.services.help_snapshot).
    snapshot: Mapped[dict[str, Any]] = mapped_column()
    message_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    created_at: Mapped[datetime] = created_column()
    updated_at: Mapped[datetime] = created_column()
    # When the user last wrote (or opened it): an answer soon after is awaited, even in quiet hours.
    user_active_at: Mapped[datetime] = created_column()
    first_answered_at: Mapped[datetime | None] = mapped_column()
    closed_at: Mapped[datetime | None] = mapped_column()
    # How many messages it took until it was (last) closed.
    messages_until_solved: Mapped[int | None] = mapped_column(Integer)


class HelpMessage(Base):
    """One message of a help case, by the user or an agent (an agent's may carry guidance for the app)."""

    __tablename__ = "help_messages"
    __table_args__ = (Index("ix_help_messages_case_id_id", "case_id", "id"),)

    id: Mapped[uuid.UUID] = id_column()
    case_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("help_cases.id", ondelete="CASCADE"))
    # The case's user, so that everything about them is found (and erased) by their id.
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    author: Mapped[str] = mapped_column(String(16))
    # The agent's API key (None for the user's messages); kept as a plain id, keys are revoked, not deleted.
    agent_key_id: Mapped[uuid.UUID | None] = mapped_column()
    text: Mapped[str] = mapped_column(Text)
    # {"screen", "highlight"}: where the app should lead the user.
    guidance: Mapped[dict[str, Any] | None] = mapped_column()
    created_at: Mapped[datetime] = created_column()
