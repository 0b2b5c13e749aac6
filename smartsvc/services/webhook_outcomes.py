"""Finishing a webhook batch (:mod:`.webhook_batch`): every outcome recorded, the unsent given back, in one
transaction; then what the answers say about the endpoint, in a short one of its own.

The rules are :mod:`.webhook_delivery`'s step 3: success; or the next try
per the retry schedule; giving up when it is used up; 410 (or failing for
``SMARTSVC_WEBHOOK_DISABLE_AFTER_S``) disables the endpoint. A delivery the
batch did not send gives its attempt (and a first attempt's ledger entry)
back and waits for a slot. Then the next delivery of each settled subject
and the endpoint's waiting ones are released (after a failure only one, a
probe).

The endpoint's row (its failure streak, and disabling it) is written after
that commit (:func:`record_health`), one UPDATE in its own transaction: the
finish itself only reads it. Locked for the whole finish, the finishes to a
refusing endpoint queued on its row for up to a second each, holding their
worker slots, while the healthy endpoint beside it was left the others
(BENCHMARKS.md, 7). A worker dying between the two transactions loses one
batch's count in the streak, nothing else.
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterable, Sequence

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from ..db import Database, UnitOfWork
from ..models import SharingLedgerEntry, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from .bulk import among, chunks, update_rows
from .outbox import complete_many
from .webhook_claims import Claim, lock_deliveries
from .webhook_delivery import disable_endpoint, next_delay, release_next, release_waiting, settle
from .webhook_events import BREAKER_FAILURES, breaker_open, enqueue_delivery


def _give_back(session: Session, given: Sequence[tuple[WebhookDelivery, uuid.UUID]], now: datetime) -> None:
    """Claimed deliveries the batch did not send (each with its attempt's id): they wait for a slot again, and
    their attempts and a first attempt's ledger entry (which has the attempt's id) are deleted, a statement for
    each table. One DELETE a delivery, by reference on the ledger (a scan: that column has no index), cost a
    dead endpoint's first batches seconds each (BENCHMARKS.md, 7)."""
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
    """One send's outcome: the attempt, then the delivery delivered, retried or failed (the endpoint's own
    row is :func:`record_health`'s)."""
    settings = uow.database.settings
    attempt.status = "succeeded" if outcome.ok else "failed"
    attempt.status_code, attempt.latency_ms = outcome.status_code, outcome.latency_ms
    attempt.error = outcome.error[:2000] if outcome.error else None
    attempt.finished_at = now
    delivery.sending_since, delivery.claim_id = None, None
    delivery.last_status_code, delivery.last_error = attempt.status_code, attempt.error
    if outcome.ok:
        delivery.delivered_at = now
        if delivery.status == "pending":
            settle(delivery, "delivered", None, now)
        released[endpoint.id].add(delivery.subject)
        return
    if delivery.status == "pending" and endpoint.enabled:
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


def _endpoints(session: Session, webhook_ids: set[uuid.UUID]) -> dict[uuid.UUID, WebhookEndpoint]:
    """The batch's endpoints, read (not locked: :func:`record_health` writes them afterwards)."""
    query = select(WebhookEndpoint).where(among(session, WebhookEndpoint.id, sorted(webhook_ids)))
    return {e.id: e for e in session.scalars(query.execution_options(populate_existing=True))}


@dataclass
class Health:
    """What one batch's answers say about its endpoint: any success, the failures after the last one (in claim
    order), and a 410."""

    succeeded: bool = False
    failures: int = 0
    gone: bool = False


def _health(sent: Sequence[tuple[Claim, Any]]) -> dict[uuid.UUID, Health]:
    health: dict[uuid.UUID, Health] = {}
    for item, outcome in sent:
        h = health.setdefault(item.webhook_id, Health())
        if outcome.ok:
            h.succeeded, h.failures = True, 0
        else:
            h.failures += 1
            h.gone = h.gone or bool(outcome.gone)
    return health


def _breaker_open_after(endpoint: WebhookEndpoint, health: Health | None) -> bool:
    """The breaker as :func:`record_health` will leave it (from the streak read at the start of the finish)."""
    if health is None or health.succeeded:
        return False
    return breaker_open(endpoint) or (endpoint.consecutive_failures or 0) + health.failures >= BREAKER_FAILURES


def record_health(database: Database, endpoints: dict[uuid.UUID, WebhookEndpoint],
                  health: dict[uuid.UUID, Health], now: datetime) -> set[uuid.UUID]:
    """Write each endpoint's failure streak after a batch, and disable one that answered 410 or has failed for
    ``SMARTSVC_WEBHOOK_DISABLE_AFTER_S``; the ids of those disabled.

    One UPDATE per endpoint whose streak changes, in a transaction of its own, so its row is locked for that
    statement only: the streak grows by the batch's failures atomically, however many finishes run side by
    side. An endpoint that answered well and was not failing is not written at all.
    """
    table = WebhookEndpoint.__table__
    changes = []
    for webhook_id, h in sorted(health.items()):
        endpoint = endpoints.get(webhook_id)
        if endpoint is None or not endpoint.enabled:
            continue
        if h.failures or endpoint.consecutive_failures or endpoint.failing_since is not None:
            changes.append((webhook_id, h))
    disabled: set[uuid.UUID] = set()
    if not changes:
        return disabled
    settings = database.settings
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        for webhook_id, h in changes:
            if not h.failures:  # the last answer was a success
                values: dict[str, Any] = {"consecutive_failures": 0, "failing_since": None}
            elif h.succeeded:  # a success, then failures
                values = {"consecutive_failures": h.failures, "failing_since": now}
            else:
                values = {"consecutive_failures": table.c.consecutive_failures + h.failures,
                          "failing_since": func.coalesce(table.c.failing_since, now)}
            since = session.execute(update(table).where(table.c.id == webhook_id, table.c.enabled.is_(True))
                                    .values(**values).returning(table.c.failing_since)).scalar()
            if since is None:
                continue  # not failing, or disabled or deleted meanwhile
            failing_for = now - since
            reason = None
            if h.gone:
                reason = "the endpoint answered 410 Gone"
            elif failing_for >= timedelta(seconds=settings.webhook_disable_after_s):
                reason = f"every attempt failed for {failing_for} (since {since.isoformat()})"
            if reason is not None:
                endpoint = session.get(WebhookEndpoint, webhook_id, with_for_update=True, populate_existing=True)
                if endpoint is not None and endpoint.enabled:
                    disable_endpoint(session, endpoint, reason, now)  # fails every pending delivery of it
                    disabled.add(webhook_id)
        uow.commit()
    return disabled


def finish(database: Database, sent: Sequence[tuple[Claim, Any]], unsent: Sequence[Claim],
           outbox_ids: Iterable[int | None], now: datetime, rng: random.Random | None = None) -> dict[uuid.UUID, str]:
    """Record the outcomes and give back what was not sent, in one transaction, then the endpoints' streaks
    (:func:`record_health`); each delivery's status."""
    claims = [c for c, _ in sent] + list(unsent)
    statuses: dict[uuid.UUID, str] = {}
    health = _health(sent)
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        endpoints = _endpoints(session, {c.webhook_id for c in claims})
        deliveries = lock_deliveries(session, [c.delivery_id for c in claims])
        released: dict[uuid.UUID, set[str]] = defaultdict(set)
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
                assert delivery is not None
                released[item.webhook_id].add(delivery.subject)
                statuses[item.delivery_id] = "delivered"
                continue
            attempt = attempts.get(item.attempt_id)
            if endpoint is None or delivery is None or attempt is None:  # the endpoint was deleted meanwhile
                statuses[item.delivery_id] = "deleted"
                continue
            _record(uow, endpoint, delivery, attempt, outcome, now, rng, released)
            statuses[item.delivery_id] = delivery.status
        _record_delivered(session, plain, now)
        for webhook_id, subjects in released.items():
            release_next(uow, webhook_id, subjects, now)
        session.flush()  # these sends no longer count as in flight
        for endpoint in endpoints.values():
            h = health.get(endpoint.id)
            if not endpoint.enabled or (h is not None and h.gone):  # a 410: record_health disables it
                continue
            if h is None or h.succeeded:
                release_waiting(uow, endpoint.id, now)
            elif not _breaker_open_after(endpoint, h):
                # After a failure one waiting delivery goes as a probe (its success releases the rest): a batch
                # a slot each, as before, sent a dead endpoint's waiting back through the queue to be parked
                # again, and that churn pushed the healthy endpoint beside it past 1 s (BENCHMARKS.md, 7).
                release_waiting(uow, endpoint.id, now, at_most=1)
        complete_many(session, outbox_ids)
        uow.commit()
    disabled = record_health(database, endpoints, health, now)
    if disabled:  # what this batch left pending to them failed with them
        for item in claims:
            if item.webhook_id in disabled and statuses.get(item.delivery_id) in ("pending", "skipped"):
                statuses[item.delivery_id] = "failed"
    return statuses
