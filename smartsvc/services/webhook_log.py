"""An endpoint's delivery log, and sending again: one delivery (manual retry) or every failure since a time.

A delivery sent again keeps its id, so the partner sees the same
``webhook-id`` and can tell it is a repeat. It gets one more try now; when
that fails, automatic retries follow only while the retry schedule is not
used up by the delivery's earlier tries.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Sequence

from sqlalchemy import select

from ..db import Database, UnitOfWork
from ..errors import InvalidInput, NotFound
from ..models import WebhookAttempt, WebhookDelivery
from ..timeutil import utcnow
from .pagination import Page
from .webhook_events import enqueue_delivery
from .webhooks import owned_endpoint, require_enabled

DELIVERY_FILTERS = ("pending", "delivered", "failed", "cancelled")
ATTEMPTS_SHOWN = 50
# Deliveries one recover call re-queues at most (call again with a later ``since`` for more).
MAX_RECOVER = 10_000


@dataclass(frozen=True)
class DeliveryView:
    """A delivery with its attempts (oldest first)."""

    delivery: WebhookDelivery
    attempts: Sequence[WebhookAttempt]


@dataclass(frozen=True)
class Recovered:
    """How many failed deliveries were queued again, and whether more are left."""

    requeued: int
    more: bool


def _views(session, deliveries: Sequence[WebhookDelivery]) -> list[DeliveryView]:
    ids = [delivery.id for delivery in deliveries]
    attempts: dict[uuid.UUID, list[WebhookAttempt]] = {i: [] for i in ids}
    if ids:
        for attempt in session.scalars(select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(ids))
                                       .order_by(WebhookAttempt.delivery_id, WebhookAttempt.number)):
            attempts[attempt.delivery_id].append(attempt)
    return [DeliveryView(d, attempts[d.id][-ATTEMPTS_SHOWN:]) for d in deliveries]


def list_deliveries(database: Database, owner: str, webhook_id: uuid.UUID, *, status: str | None, limit: int,
                    cursor: uuid.UUID | None) -> Page[DeliveryView]:
    """The endpoint's deliveries, newest first, optionally of one status, each with its attempts."""
    with database.session() as session:
        owned_endpoint(session, owner, webhook_id)
        query = select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
        if status is not None:
            query = query.where(WebhookDelivery.status == status)
        if cursor is not None:
            query = query.where(WebhookDelivery.id < cursor)
        rows = list(session.scalars(query.order_by(WebhookDelivery.id.desc()).limit(limit + 1)))
        has_more = len(rows) > limit
        rows = rows[:limit]
        return Page(_views(session, rows), rows[-1].id if has_more and rows else None)


def _requeue(uow: UnitOfWork, delivery: WebhookDelivery, now: datetime) -> None:
    delivery.status, delivery.status_reason = "pending", None
    delivery.next_attempt_at = delivery.updated_at = now
    enqueue_delivery(uow, delivery, now)


def retry_delivery(database: Database, owner: str, webhook_id: uuid.UUID, delivery_id: uuid.UUID) -> DeliveryView:
    """Send one delivery again now (failed, cancelled, delivered, or pending a later retry)."""
    now = utcnow()
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        require_enabled(owned_endpoint(session, owner, webhook_id))
        delivery = session.get(WebhookDelivery, delivery_id, with_for_update=True, populate_existing=True)
        if delivery is None or delivery.webhook_id != webhook_id:
            raise NotFound(f"delivery {delivery_id} of webhook {webhook_id} does not exist")
        if delivery.sending_since is None:  # one being sent right now is left alone
            _requeue(uow, delivery, now)
        [view] = _views(session, [delivery])
        uow.commit()
    return view


def recover(database: Database, owner: str, webhook_id: uuid.UUID, since: datetime) -> Recovered:
    """Queue again every failed delivery of the endpoint created at or after ``since`` (oldest first)."""
    now = utcnow()
    if since > now:
        raise InvalidInput("since", "must not be in the future")
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        require_enabled(owned_endpoint(session, owner, webhook_id))
        failed = list(session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id,
                                          WebhookDelivery.status == "failed", WebhookDelivery.created_at >= since)
            .order_by(WebhookDelivery.id).limit(MAX_RECOVER + 1)))
        more = len(failed) > MAX_RECOVER
        for delivery in failed[:MAX_RECOVER]:
            _requeue(uow, delivery, now)
        uow.commit()
    return Recovered(requeued=min(len(failed), MAX_RECOVER), more=more)
