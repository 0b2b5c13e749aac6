"""Partner webhooks (DELIVERY.md "Partner webhooks") and the sharing ledger (TRUST.md).

- :class:`WebhookEndpoint`: a URL a partner (or operator) key registered, the
  event types it wants, its signing secrets (encrypted at rest, never shown
  again after creation or rotation) and whether it is enabled;
- :class:`WebhookDelivery`: one event for one endpoint; its ``id`` is the
  ``webhook-id`` header, the same on every retry;
- :class:`WebhookAttempt`: one HTTP request of a delivery (the delivery log);
- :class:`WebhookNotice`: something the owner should know about an endpoint
  (``webhook.disabled``);
- :class:`SharingLedgerEntry`: every time data about a user left the system.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, created_column, id_column

WEBHOOK_DELIVERY_STATUSES = ("pending", "delivered", "failed", "cancelled")
WEBHOOK_ATTEMPT_STATUSES = ("sending", "succeeded", "failed")


class WebhookEndpoint(Base):
    """A partner's URL, the events it subscribes to, and how it is signed."""

    __tablename__ = "webhooks"
    __table_args__ = (Index("ix_webhooks_owner_id", "owner", "id"),)

    id: Mapped[uuid.UUID] = id_column()
    # The principal that registered it ("key:<id>"): only it sees the endpoint.
    owner: Mapped[str] = mapped_column(String(100))
    url: Mapped[str] = mapped_column(String(2048))
    event_types: Mapped[list[Any]] = mapped_column()
    description: Mapped[str | None] = mapped_column(String(500))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(500))
    disabled_at: Mapped[datetime | None] = mapped_column()
    # Decimals coordinates in payloads are rounded to for this endpoint (0–6).
    coordinate_decimals: Mapped[int] = mapped_column(Integer, default=6)
    # Fernet tokens: an HMAC secret cannot be hashed (it is needed to sign), so it is encrypted.
    secret_encrypted: Mapped[str] = mapped_column(Text)
    # The secret before the last rotation, still signing until ``previous_secret_expires_at``.
    previous_secret_encrypted: Mapped[str | None] = mapped_column(Text)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column()
    # Start of the current run of failed attempts (None after a success): disables after a while.
    failing_since: Mapped[datetime | None] = mapped_column()
    # Attempts failed in a row (0 after a success): the circuit breaker opens at BREAKER_FAILURES.
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = created_column()
    updated_at: Mapped[datetime] = created_column()


class WebhookDelivery(Base):
    """One event for one endpoint: the body sent (coordinates coarsened already) and where it stands."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        # The delivery log of an endpoint, newest first; recover (failed since a time).
        Index("ix_webhook_deliveries_webhook_id_id", "webhook_id", "id"),
        # Ordering: earlier deliveries of the same endpoint and subject still pending.
        Index("ix_webhook_deliveries_webhook_id_subject_status", "webhook_id", "subject", "status"),
        Index("ix_webhook_deliveries_user_id_status", "user_id", "status"),
        # Isolation: the sends in flight to an endpoint, and its deliveries waiting for a free slot. Partial:
        # most rows are neither, and every write of a row (three at least per delivery, none of them HOT) adds
        # an entry to each index that holds it (BENCHMARKS.md, 7).
        Index("ix_webhook_deliveries_webhook_id_sending_since", "webhook_id", "sending_since",
              postgresql_where=text("sending_since IS NOT NULL"), sqlite_where=text("sending_since IS NOT NULL")),
        Index("ix_webhook_deliveries_webhook_id_waiting_since", "webhook_id", "waiting_since",
              postgresql_where=text("waiting_since IS NOT NULL"), sqlite_where=text("waiting_since IS NOT NULL")),
    )

    id: Mapped[uuid.UUID] = id_column()
    webhook_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_type: Mapped[str] = mapped_column(String(64))
    # What the event is about ("user:<id>", "dataset:<id>"): deliveries of one subject keep their order.
    subject: Mapped[str] = mapped_column(String(200))
    # Whose personal data it carries (None: none); erasing the user erases the delivery.
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # {"type", "timestamp", "data"}: the exact JSON object sent.
    payload: Mapped[dict[str, Any]] = mapped_column()
    # One of WEBHOOK_DELIVERY_STATUSES.
    status: Mapped[str] = mapped_column(String(16))
    status_reason: Mapped[str | None] = mapped_column(String(500))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    # Set while a worker is sending it (a claim older than a few minutes is from a dead worker).
    sending_since: Mapped[datetime | None] = mapped_column()
    # The batch sending it (one worker slot): the endpoint's slots in flight are its distinct claims.
    claim_id: Mapped[uuid.UUID | None] = mapped_column()
    # Set while it waits for one of the endpoint's in-flight sends to finish (SMARTSVC_WEBHOOK_MAX_IN_FLIGHT).
    waiting_since: Mapped[datetime | None] = mapped_column()
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(2000))
    created_at: Mapped[datetime] = created_column()
    delivered_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = created_column()


class WebhookAttempt(Base):
    """One HTTP request of a delivery: its outcome and, after a failure, when the next one is due."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_delivery_id_number", "delivery_id", "number"),)

    id: Mapped[uuid.UUID] = id_column()
    delivery_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhook_deliveries.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    # One of WEBHOOK_ATTEMPT_STATUSES.
    status: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(2000))
    started_at: Mapped[datetime] = created_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    next_retry_at: Mapped[datetime | None] = mapped_column()


class WebhookNotice(Base):
    """Something that happened to an endpoint its owner must learn about (``webhook.disabled``)."""

    __tablename__ = "webhook_notices"
    __table_args__ = (Index("ix_webhook_notices_webhook_id_id", "webhook_id", "id"),)

    id: Mapped[uuid.UUID] = id_column()
    webhook_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(String(1000))
    at: Mapped[datetime] = created_column()


class SharingLedgerEntry(Base):
    """Data about a user left the system: when, to whom, with which event and which fields (TRUST.md)."""

    __tablename__ = "sharing_ledger"
    __table_args__ = (Index("ix_sharing_ledger_user_id_id", "user_id", "id"),)

    id: Mapped[uuid.UUID] = id_column()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    at: Mapped[datetime] = created_column()
    # "webhook" (a partner endpoint) or "agent" (a help case).
    channel: Mapped[str] = mapped_column(String(32))
    # Who received it, for a person: the partner key's name and the endpoint's host.
    recipient: Mapped[str] = mapped_column(String(300))
    # The receiving object (the webhook endpoint's id) and the principal owning it.
    recipient_id: Mapped[str | None] = mapped_column(String(100))
    recipient_owner: Mapped[str | None] = mapped_column(String(100))
    event_type: Mapped[str] = mapped_column(String(64))
    # Dotted paths of the fields sent ("suggestion.title", "payload.spots[].lat").
    fields: Mapped[list[Any]] = mapped_column()
    # What was sent (the webhook delivery's id): the same id the partner saw.
    reference_id: Mapped[str | None] = mapped_column(String(100))
