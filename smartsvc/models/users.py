"""Users, their devices and their consents (with history)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, created_column, id_column

CONSENT_PURPOSES = ("location", "telemetry", "proactive_push", "partner_sharing")
DEVICE_PLATFORMS = ("fcm", "apns", "webpush")


class User(Base):
    """An end user of the mobile app, known to us by the vendor's external id."""

    __tablename__ = "users"

    id: Mapped[uuid.UUID] = id_column()
    external_id: Mapped[str] = mapped_column(String(200), unique=True)
    time_zone: Mapped[str] = mapped_column(String(64), index=True)
    locale: Mapped[str | None] = mapped_column(String(35))
    quiet_hours_start: Mapped[str | None] = mapped_column(String(5))
    quiet_hours_end: Mapped[str | None] = mapped_column(String(5))
    max_pushes_per_day: Mapped[int] = mapped_column(Integer, default=3)
    # Bumped to invalidate every access token issued so far.
    token_generation: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = created_column()
    updated_at: Mapped[datetime] = created_column()


class Device(Base):
    """A phone or browser that can receive pushes for a user."""

    __tablename__ = "devices"
    __table_args__ = (UniqueConstraint("user_id", "token_hash", name="uq_devices_user_token"),)

    id: Mapped[uuid.UUID] = id_column()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    platform: Mapped[str] = mapped_column(String(16))
    token: Mapped[str | None] = mapped_column(String(4096))
    subscription: Mapped[dict[str, Any] | None] = mapped_column()
    # SHA-256 of the token or the Web Push endpoint: the same device
    # registered twice stays one row.
    token_hash: Mapped[str] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    deactivated_reason: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = created_column()
    last_seen_at: Mapped[datetime] = created_column()


class Consent(Base):
    """The current state of one consent purpose for one user."""

    __tablename__ = "consents"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    purpose: Mapped[str] = mapped_column(String(32), primary_key=True)
    granted: Mapped[bool] = mapped_column(Boolean)
    changed_at: Mapped[datetime] = created_column()


class ConsentEvent(Base):
    """One change of a consent: the history the user can read back."""

    __tablename__ = "consent_events"
    __table_args__ = (Index("ix_consent_events_user_purpose", "user_id", "purpose"),)

    id: Mapped[uuid.UUID] = id_column()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(String(32))
    granted: Mapped[bool] = mapped_column(Boolean)
    at: Mapped[datetime] = created_column()
