"""Suggestions, the pushes that carried them, and the user's interactions (SUGGESTIONS.md, DELIVERY.md "Pushes").

A suggestion is written once per ``dedupe_key`` (``"{trigger_id}:{rule_id}"``)
whatever the attention budget decided: what is not pushed stays in the
inbox as ``suppressed`` with the reason. Each push of a suggestion to one
device is a :class:`PushAttempt`, claimed before the send and finished
after, so a task run twice pushes once.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, created_column, id_column

SUGGESTION_STATUSES = ("new", "delivered", "opened", "accepted", "dismissed", "snoozed", "expired", "suppressed")
DELIVERY_STATUSES = ("pending", "delivered", "failed", "none")
PUSH_ATTEMPT_STATUSES = ("sending", "sent", "failed")


class Suggestion(Base):
    """One suggestion for one user: its content, why it was made, and what became of it."""

    __tablename__ = "suggestions"
    __table_args__ = (
        # The inbox, newest first.
        Index("ix_suggestions_user_id_id", "user_id", "id"),
        # The budget: pushes of a user per day and per rule, and content already pushed.
        Index("ix_suggestions_user_id_pushed_at", "user_id", "pushed_at"),
        Index("ix_suggestions_user_id_content_hash", "user_id", "content_hash"),
        Index("ix_suggestions_user_id_collapse_key", "user_id", "collapse_key"),
        # The beat job: deferred ones due, snoozed ones due, and those past their expiry.
        Index("ix_suggestions_status_deliver_after", "status", "deliver_after"),
        Index("ix_suggestions_status_snoozed_until", "status", "snoozed_until"),
        Index("ix_suggestions_status_expires_at", "status", "expires_at"),
    )

    id: Mapped[uuid.UUID] = id_column()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # Kept when the rule is deleted: the suggestion (and its reason) stays in the user's inbox.
    rule_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("rules.id", ondelete="SET NULL"), index=True)
    # Not a foreign key: triggers are working data that may be purged; the reason keeps what it was.
    trigger_id: Mapped[uuid.UUID | None] = mapped_column()
    # The recipe that made it.
    kind: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(500))
    body: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column()
    # Why: {"rule": {"id", "name"}, "trigger": {"event", "at", "fields"}, "facts": {...}}.
    reason: Mapped[dict[str, Any]] = mapped_column()
    # A newer suggestion with the same key replaces the older one (the phone replaces the push too).
    collapse_key: Mapped[str] = mapped_column(String(200))
    # SHA-256 of kind, title, body and payload: the same content is never pushed twice to a user.
    content_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    status_reason: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = created_column()
    expires_at: Mapped[datetime] = mapped_column()
    # Set while it waits for the end of quiet hours (status new, not pushed yet).
    deliver_after: Mapped[datetime | None] = mapped_column()
    snoozed_until: Mapped[datetime | None] = mapped_column()
    delivery_status: Mapped[str] = mapped_column(String(16))
    delivered_at: Mapped[datetime | None] = mapped_column()
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    # When the budget last let it be pushed (what the daily cap, cooldowns and "already sent" count).
    pushed_at: Mapped[datetime | None] = mapped_column()
    # How many times it was pushed again after a snooze: push attempts are unique per round.
    push_round: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))


class PushAttempt(Base):
    """One try to push a suggestion to one device: claimed (``sending``) before the send, finished after.

    A try the push service asked to repeat (429, 5xx, network) ends
    ``failed`` with ``retry_at`` set; the next try is a new row with the
    next ``try_number``. The row with the highest try number is where the
    device stands.
    """

    __tablename__ = "push_attempts"
    __table_args__ = (
        UniqueConstraint("suggestion_id", "device_id", "round", "try_number",
                         name="uq_push_attempts_suggestion_device_round_try"),
    )

    id: Mapped[uuid.UUID] = id_column()
    suggestion_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("suggestions.id", ondelete="CASCADE"))
    device_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    round: Mapped[int] = mapped_column(Integer)
    # 1 for the first try of a device in a round, +1 for each retry.
    try_number: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    provider: Mapped[str] = mapped_column(String(32))
    # One of PUSH_ATTEMPT_STATUSES.
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(String(2000))
    # The push service's HTTP status (None: not sent yet, or no answer).
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime] = created_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    # Set on a failed try that will be tried again: when the next try is due.
    retry_at: Mapped[datetime | None] = mapped_column()


# How the user met a touchpoint, when the writer does not say (smartsvc.services.journal documents them).
_KIND_CHANNELS = {"suggestion.created": "inbox", "suggestion.pushed": "push", "help.answered": "agent",
                  "help.closed": "agent"}


def default_channel(kind: str) -> str:
    """The channel of a touchpoint of ``kind`` recorded without one: ``api`` unless the kind says otherwise."""
    return _KIND_CHANNELS.get(kind, "api")


def _channel_default(context: Any) -> str:
    return default_channel(context.get_current_parameters().get("kind") or "")


class Interaction(Base):
    """Something a user did or was shown (``suggestion.created``, ``suggestion.dismissed``, …): their memory."""

    __tablename__ = "interactions"
    __table_args__ = (
        Index("ix_interactions_user_id_id", "user_id", "id"),
        # Effort metrics: every touchpoint of one suggestion or help case.
        Index("ix_interactions_subject_id", "subject_id"),
    )

    id: Mapped[uuid.UUID] = id_column()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(64))
    # Where it happened: api, inbox, push, webhook, agent (TRUST.md: "with its channel and time").
    channel: Mapped[str] = mapped_column(String(16), default=_channel_default, server_default="api")
    subject_type: Mapped[str | None] = mapped_column(String(32))
    subject_id: Mapped[uuid.UUID | None] = mapped_column()
    data: Mapped[dict[str, Any]] = mapped_column()
    at: Mapped[datetime] = created_column()
