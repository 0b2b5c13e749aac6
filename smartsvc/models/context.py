"""What the phones told us (``context_events``) and what we derived from it per user (``user_contexts``).

Events are kept as received (coordinates rounded), one row per
``(user, type, at)`` so that a batch sent again stores nothing new. The
derived state is one row per user, locked while a batch is applied, so one
user's events are applied one batch at a time and in ``at`` order.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, created_column, id_column

CONTEXT_EVENT_TYPES = ("location", "activity", "trip", "app")
ACTIVITIES = ("still", "walking", "cycling", "driving")


class ContextEvent(Base):
    """One event a phone reported: ``data`` holds its fields without ``type`` and ``at``."""

    __tablename__ = "context_events"
    # Also the index of a user's events (deleting a user cascades through it).
    __table_args__ = (UniqueConstraint("user_id", "type", "at", name="uq_context_events_user_type_at"),)

    id: Mapped[uuid.UUID] = id_column()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(16))
    # When it happened on the phone (not when we received it).
    at: Mapped[datetime] = mapped_column()
    data: Mapped[dict[str, Any]] = mapped_column()
    received_at: Mapped[datetime] = created_column()
    # Older than the user's last applied event by more than the late window: stored, applied to nothing.
    late: Mapped[bool] = mapped_column(Boolean, default=False)


class UserContext(Base):
    """A user's current context as derived from their events (SUGGESTIONS.md "The current context").

    JSON parts (times as ISO 8601 UTC strings): ``fix`` {lat, lon,
    accuracy_m, speed_mps, heading, at}; ``activity`` {value, at}; ``app``
    {screen, at}; ``trip`` {trip_id, destination {lat, lon}, product_id,
    mode, started_at, approached: [rule ids already fired]}.
    """

    __tablename__ = "user_contexts"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    # The ``at`` of the newest event applied: the cursor late events are measured against.
    last_at: Mapped[datetime | None] = mapped_column()
    fix: Mapped[dict[str, Any] | None] = mapped_column()
    # Reported by the last fix, else from the last two fixes; None when unknown.
    speed_mps: Mapped[float | None] = mapped_column(Float)
    activity: Mapped[dict[str, Any] | None] = mapped_column()
    app: Mapped[dict[str, Any] | None] = mapped_column()
    trip: Mapped[dict[str, Any] | None] = mapped_column()
    # When the geofence tracker next has something to do without a fix (dwell, a schedule closing).
    geofence_due_at: Mapped[datetime | None] = mapped_column(index=True)
    updated_at: Mapped[datetime] = created_column()
