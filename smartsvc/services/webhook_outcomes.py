"""Finishing a webhook batch (:mod:`.webhook_batch`): every outcome recorded, the unsent given back, in one transaction.

The rules are :mod:`.webhook_delivery`'s step 3: success; or the next try
per the retry schedule; giving up when it is used up; 410 (or failing for
``SMARTSVC_WEBHOOK_DISABLE_AFTER_S``) disables the endpoint. A delivery the
batch did not send gives its attempt (and a first attempt's ledger entry)
back and waits for a slot. Then the next delivery of each settled subject
and the endpoint's waiting ones are released (after a failure only one, a
probe).
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


def _give_back(session: Session, given: Sequence[tuple[WebhookDelivery, uuid.UUID]], now: datetime) -> None:
    """Claimed deliveries the batch did not send (each with its attempt's id): they wait for a slot again, and
    their attempts and a first attempt's ledger entry (which has the attempt's id) are deleted, a statement for
    each table. One DELETE a delivery, by reference on the ledger, cost a dead endpoint's first batches
    seconds each while they held its lock (BENCHMARKS.md, 7)."""
    firsts: list[uuid.UUID] = []
    for delivery, attempt_id in given:
        delivery.attempts = max(0, delivery.attempts - 1)
        if delivery.attempts == 0 and delivery.user_id is not None:
            firsts.append(attempt_id)
        delivery.sending_since, delivery.claim_id = None, None
        delivery.waiting_since = delivery.waiting_since or now
        delivery.updated_at = now
    attempts, ledger = WebhookAttempt.__table__, SharingLedgerEntry.__table__
    for chunk in chunks([attempt_id for _, attempt_id in given]):
        session.execute(delete(attempts).where(among(session, attempts.c.id, chunk)))
    for chunk in chunks(firsts):
        session.execute(delete(ledger).where(among(session, ledger.c.id, chunk), ledger.c.channel == "webhook"))


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


def _endpoints(session: Session, sent: Sequence[tuple[Claim, Any]],
               webhook_ids: set[uuid.UUID]) -> dict[uuid.UUID, WebhookEndpoint]:
    """The batch's endpoints, those this finish may change locked (before the deliveries: the order a PATCH
    disabling one locks them in).

    An endpoint that answered every send of the batch well and was not failing before is only read: its
    row is not written, and its finishes run side by side. Locked, the finishes to one endpoint took turns
    on its row, each holding its worker slot while it waited: at 2,000 events/s beside a dead endpoint the
    slots filled up and the healthy endpoint fell to 0.64 of its rate (BENCHMARKS.md, 7). FOR NO KEY UPDATE,
    not FOR UPDATE: it excludes the other finishes, a PATCH and a DELETE, but not the foreign-key check of a
    new delivery's INSERT, so the events emitted meanwhile do not wait for this transaction either.
    """
    def read(ids: Sequence[uuid.UUID], lock: bool) -> dict[uuid.UUID, WebhookEndpoint]:
        query = select(WebhookEndpoint).where(among(session, WebhookEndpoint.id, ids)).order_by(WebhookEndpoint.id)
        if lock:
            query = query.with_for_update(key_share=True)
        return {e.id: e for e in session.scalars(query.execution_options(populate_existing=True))}

    endpoints = read(sorted(webhook_ids), lock=False)
    answered_badly = {item.webhook_id for item, outcome in sent if not outcome.ok}
    changing = sorted(w for w, e in endpoints.items()
                      if w in answered_badly or not e.enabled or e.consecutive_failures or e.failing_since is not None)
    if changing:
        endpoints.update(read(changing, lock=True))
    return endpoints


def finish(database: Database, sent: Sequence[tuple[Claim, Any]], unsent: Sequence[Claim],
           outbox_ids: Iterable[int | None], now: datetime, rng: random.Random | None = None) -> dict[uuid.UUID, str]:
    """Record the outcomes and give back what was not sent, in one transaction; each delivery's status."""
    claims = [c for c, _ in sent] + list(unsent)
    statuses: dict[uuid.UUID, str] = {}
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        endpoints = _endpoints(session, sent, {c.webhook_id for c in claims})
        deliveries = lock_deliveries(session, [c.delivery_id for c in claims])
        released: dict[uuid.UUID, set[str]] = defaultdict(set)
        succeeded: set[uuid.UUID] = set()
        # A 2xx for a delivery still pending to an endpoint still enabled: no rule to apply, so these are
        # written with two bulk statements; every other outcome goes through _record.
        plain = [(item, outcome) for item, outcome in sent if outcome.ok and item.webhook_id in endpoints
                 and endpoints[item.webhook_id].enabled and item.delivery_id in deliveries
                 and deliveries[item.delivery_id].status == "pending"]
        plain_ids = {item.delivery_id for item, _ in plain}
        attempts = {a.id: a for chunk in chunks([c.attempt_id for c, _ in sent if c.delivery_id not in plain_ids])
                    for a in session.scalars(select(WebhookAttempt).where(among(session, WebhookAttempt.id, chunk)))}
        given = [(deliveries[item.delivery_id], item.attempt_id) for item in unsent
                 if item.delivery_id in deliveries and item.webhook_id in endpoints]
        _give_back(session, given, now)
        statuses.update((delivery.id, "skipped") for delivery, _ in given)
        for item, outcome in sent:
            endpoint, delivery = endpoints.get(item.webhook_id), deliveries.get(item.delivery_id)
            if item.delivery_id in plain_ids:
                assert endpoint is not None and delivery is not None
                if endpoint.consecutive_failures or endpoint.failing_since is not None:  # locked (_endpoints)
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
            if not endpoint.enabled:
                continue
            if endpoint.id in succeeded:
                release_waiting(uow, endpoint.id, now)
            elif not breaker_open(endpoint):
                # After a failure one waiting delivery goes as a probe (its success releases the rest): a batch
                # a slot each, as before, sent a dead endpoint's waiting back through the queue to be parked
                # again, and that churn pushed the healthy endpoint beside it past 1 s (BENCHMARKS.md, 7).
                release_waiting(uow, endpoint.id, now, at_most=1)
        complete_many(session, outbox_ids)
        uow.commit()
    return statuses
