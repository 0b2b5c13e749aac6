"""Finishing a webhook batch (:mod:`.webhook_batch`): every outcome recorded, the unsent given back, in one transaction.

The rules are :mod:`.webhook_delivery`'s step 3: success; or the next try
per the retry schedule; giving up when it is used up; 410 (or failing for
``SMARTSVC_WEBHOOK_DISABLE_AFTER_S``) disables the endpoint. A delivery the
batch did not send gives its attempt (and a first attempt's ledger entry)
back and waits for a slot. Then the next delivery of each settled subject
and the endpoint's waiting ones are released.
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any, Iterable, Sequence

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ..db import Database, UnitOfWork
from ..models import SharingLedgerEntry, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from .bulk import among, chunks, update_rows
from .outbox import complete_many
from .webhook_claims import Claim, lock_deliveries
from .webhook_delivery import disable_endpoint, next_delay, release_next, release_waiting, settle
from .webhook_events import breaker_open, enqueue_delivery


def _give_back(session: Session, delivery: WebhookDelivery, attempt: WebhookAttempt | None, now: datetime) -> None:
    """A claimed delivery the batch did not send: its attempt (and a first attempt's ledger entry) is undone."""
    if attempt is not None:
        session.delete(attempt)
    delivery.attempts = max(0, delivery.attempts - 1)
    if delivery.attempts == 0 and delivery.user_id is not None:
        session.execute(delete(SharingLedgerEntry).where(SharingLedgerEntry.reference_id == str(delivery.id),
                                                         SharingLedgerEntry.channel == "webhook")
                        .execution_options(synchronize_session=False))
    delivery.sending_since, delivery.claim_id = None, None
    delivery.waiting_since = delivery.waiting_since or now
    delivery.updated_at = now


def _record(uow: UnitOfWork, endpoint: WebhookEndpoint, delivery: WebhookDelivery, attempt: WebhookAttempt,
            outcome: Any, now: datetime, rng: random.Random | None,
            released: dict[uuid.UUID, set[str]]) -> None:
    """One send's outcome: the attempt, then the delivery delivered, retried, failed or its endpoint disabled."""
    settings = uow.database.settings
    attempt.status = "succeeded" if outcome.ok else "failed"
    attempt.status_code, attempt.latency_ms = outcome.status_code, outcome.latency_ms
    attempt.error = outcome.error[:2000] if outcome.error else None
    attempt.finished_at = now
    delivery.sending_since, delivery.claim_id = None, None
    delivery.last_status_code, delivery.last_error = attempt.status_code, attempt.error
    if outcome.ok:
        delivery.delivered_at = now
        endpoint.failing_since, endpoint.consecutive_failures = None, 0
        if delivery.status == "pending":
            settle(delivery, "delivered", None, now)
        released[endpoint.id].add(delivery.subject)
        return
    endpoint.failing_since = endpoint.failing_since or now
    endpoint.consecutive_failures = (endpoint.consecutive_failures or 0) + 1
    failing_for = now - endpoint.failing_since
    reason = None
    if outcome.gone:
        reason = "the endpoint answered 410 Gone"
    elif failing_for >= timedelta(seconds=settings.webhook_disable_after_s):
        reason = f"every attempt failed for {failing_for} (since {endpoint.failing_since.isoformat()})"
    if reason is not None and endpoint.enabled:
        disable_endpoint(uow.session, endpoint, reason, now)  # fails every pending delivery of it (in the table)
        delivery.status, delivery.status_reason = "failed", f"endpoint disabled: {reason}"[:500]
        delivery.next_attempt_at, delivery.updated_at = None, now
    elif delivery.status == "pending" and endpoint.enabled:
        delay = next_delay(settings.webhook_retry_schedule, delivery.attempts, outcome.retry_after_s, rng)
        if delay is None:
            settle(delivery, "failed", f"gave up after {delivery.attempts} attempts", now)
            released[endpoint.id].add(delivery.subject)
        else:
            attempt.next_retry_at = delivery.next_attempt_at = now + delay
            delivery.updated_at = now
            enqueue_delivery(uow, delivery, now + delay)
    else:
        released[endpoint.id].add(delivery.subject)


def _record_delivered(session: Session, plain: Sequence[tuple[Claim, Any]], now: datetime) -> None:
    """Successful sends of pending deliveries: their attempts and the deliveries, in two bulk statements."""
    if not plain:
        return
    update_rows(session, WebhookAttempt.__table__, "id",
                [{"id": item.attempt_id, "status_code": o.status_code, "latency_ms": o.latency_ms}
                 for item, o in plain],
                {"status": "succeeded", "error": None, "finished_at": now})
    update_rows(session, WebhookDelivery.__table__, "id",
                [{"id": item.delivery_id, "last_status_code": o.status_code} for item, o in plain],
                {"status": "delivered", "status_reason": None, "next_attempt_at": None, "sending_since": None,
                 "claim_id": None, "last_error": None, "delivered_at": now, "updated_at": now})


def finish(database: Database, sent: Sequence[tuple[Claim, Any]], unsent: Sequence[Claim],
           outbox_ids: Iterable[int | None], now: datetime, rng: random.Random | None = None) -> dict[uuid.UUID, str]:
    """Record the outcomes and give back what was not sent, in one transaction; each delivery's status."""
    claims = [c for c, _ in sent] + list(unsent)
    statuses: dict[uuid.UUID, str] = {}
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        # The endpoints first, then the deliveries: the order disabling an endpoint (PATCH) locks them in.
        webhook_ids = sorted({c.webhook_id for c in claims})
        endpoints = {e.id: e for e in session.scalars(
            select(WebhookEndpoint).where(among(session, WebhookEndpoint.id, webhook_ids)).order_by(WebhookEndpoint.id)
            .with_for_update().execution_options(populate_existing=True))}
        deliveries = lock_deliveries(session, [c.delivery_id for c in claims])
        released: dict[uuid.UUID, set[str]] = defaultdict(set)
        succeeded: set[uuid.UUID] = set()
        # A 2xx for a delivery still pending to an endpoint still enabled: no rule to apply, so these are
        # written with two bulk statements; every other outcome goes through _record.
        plain = [(item, outcome) for item, outcome in sent if outcome.ok and item.webhook_id in endpoints
                 and endpoints[item.webhook_id].enabled and item.delivery_id in deliveries
                 and deliveries[item.delivery_id].status == "pending"]
        plain_ids = {item.delivery_id for item, _ in plain}
        attempts = {a.id: a for chunk in chunks([c.attempt_id for c in claims if c.delivery_id not in plain_ids])
                    for a in session.scalars(select(WebhookAttempt).where(among(session, WebhookAttempt.id, chunk)))}
        for item in unsent:
            delivery = deliveries.get(item.delivery_id)
            if delivery is not None and item.webhook_id in endpoints:
                _give_back(session, delivery, attempts.get(item.attempt_id), now)
                statuses[item.delivery_id] = "skipped"
        for item, outcome in sent:
            endpoint, delivery = endpoints.get(item.webhook_id), deliveries.get(item.delivery_id)
            if item.delivery_id in plain_ids:
                assert endpoint is not None and delivery is not None
                endpoint.failing_since, endpoint.consecutive_failures = None, 0
                succeeded.add(endpoint.id)
                released[endpoint.id].add(delivery.subject)
                statuses[item.delivery_id] = "delivered"
                continue
            attempt = attempts.get(item.attempt_id)
            if endpoint is None or delivery is None or attempt is None:  # the endpoint was deleted meanwhile
                statuses[item.delivery_id] = "deleted"
                continue
            was_enabled = endpoint.enabled
            _record(uow, endpoint, delivery, attempt, outcome, now, rng, released)
            if was_enabled and not endpoint.enabled:  # disabled by this answer: the batch's others fail too
                for other in deliveries.values():
                    if other.webhook_id == endpoint.id and other.status == "pending" and other.id not in plain_ids:
                        other.status, other.status_reason = "failed", delivery.status_reason
                        other.next_attempt_at, other.updated_at = None, now
            if outcome.ok:
                succeeded.add(endpoint.id)
            statuses[item.delivery_id] = delivery.status
        _record_delivered(session, plain, now)
        for webhook_id, subjects in released.items():
            release_next(uow, webhook_id, subjects, now)
        session.flush()  # these sends no longer count as in flight
        for endpoint in endpoints.values():
            if endpoint.enabled and (endpoint.id in succeeded or not breaker_open(endpoint)):
                # A failure of an endpoint whose breaker is open releases nothing: the waiting would only fail too.
                release_waiting(uow, endpoint.id, now)
        complete_many(session, outbox_ids)
        uow.commit()
    return statuses
