"""Batched webhook delivery: claim a batch in one transaction, send one after another, finish in one more.

The rules are those of :mod:`.webhook_delivery` (read its docstring); what
changes is the cost. The outbox relay hands one task up to
``SMARTSVC_WEBHOOK_BATCH_SIZE`` due deliveries of one endpoint; the claim
reads and writes them with a handful of statements, the sends share one
kept-alive connection, and the finish settles them together. The whole
batch is one worker slot of its endpoint (``SMARTSVC_WEBHOOK_MAX_IN_FLIGHT``
counts batches), and a batch stops sending when its endpoint fails to
answer or its time budget (:data:`SEND_BUDGET_S`) is spent: the deliveries
it did not send give their attempt back and wait for a slot, so a hanging
endpoint costs one timeout per batch, not one per delivery.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterable, Sequence
from urllib.parse import urlsplit

from sqlalchemy import bindparam, delete, exists, insert, select, update
from sqlalchemy.orm import Session, aliased, defer

from ..db import Database, UnitOfWork
from ..ids import new_id
from ..models import SharingLedgerEntry, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from ..timeutil import utcnow
from .consents import consenting_users
from .delivery_rows import among, chunks, complete_messages
from .sharing import owner_name
from .webhook_delivery import (STALE_SEND, Sender, body_bytes, disable_endpoint, in_flight, message_id,
                               next_delay, release_next, release_waiting, settle, transport_options)
from .webhook_events import CONSENT_WITHDRAWN, PARTNER_SHARING, breaker_open, enqueue_delivery, field_paths
from .webhook_secrets import active_secrets

log = logging.getLogger(__name__)

# The Celery task sending a batch of deliveries (workers/tasks/webhooks.py); the relay groups due
# deliveries of one endpoint into it.
DELIVER_BATCH_TASK = "smartsvc.webhooks.deliver_batch"
# A batch starts no new send after this long: a slow endpoint gives its slot back to the others regularly.
SEND_BUDGET_S = 5.0
# Sends of one batch in flight at once (after the endpoint's first answer): a partner's endpoint sees at most
# this many times SMARTSVC_WEBHOOK_MAX_IN_FLIGHT concurrent requests.
SEND_CONCURRENCY = 8
Item = tuple[uuid.UUID, "int | None"]


def batches_per_endpoint(messages: Sequence[Any]) -> list[list[Any]]:
    """Outbox messages of :data:`~.webhook_events.DELIVER_TASK` cut into one batch per endpoint (their
    ordering key), each in commit order: what the relay publishes as :data:`DELIVER_BATCH_TASK` tasks."""
    by_endpoint: dict[str | None, list[Any]] = {}
    for message in messages:
        by_endpoint.setdefault(message.ordering_key, []).append(message)
    return list(by_endpoint.values())


@dataclass(frozen=True)
class Claim:
    """One delivery claimed for sending: where to, the exact body and the secrets to sign it with."""

    delivery_id: uuid.UUID
    attempt_id: uuid.UUID
    webhook_id: uuid.UUID
    url: str
    body: bytes
    secrets: list[str]


def _lock_deliveries(session: Session, ids: Sequence[uuid.UUID], *,
                     payload: bool = True) -> dict[uuid.UUID, WebhookDelivery]:
    """The deliveries, read fresh and locked in id order (``payload=False``: without their bodies)."""
    out: dict[uuid.UUID, WebhookDelivery] = {}
    for chunk in chunks(sorted(ids)):
        query = select(WebhookDelivery).where(among(session, WebhookDelivery.id, chunk)).order_by(WebhookDelivery.id)
        if not payload:
            query = query.options(defer(WebhookDelivery.payload))
        out.update((d.id, d) for d in session.scalars(
            query.with_for_update().execution_options(populate_existing=True)))
    return out


def _behind_earlier(session: Session, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    """Those of ``ids`` with an earlier pending delivery of the same endpoint and subject (ordering)."""
    earlier = aliased(WebhookDelivery)
    blocked: set[uuid.UUID] = set()
    for chunk in chunks(sorted(ids)):
        blocked.update(session.scalars(select(WebhookDelivery.id).where(
            among(session, WebhookDelivery.id, chunk),
            exists().where(earlier.webhook_id == WebhookDelivery.webhook_id, earlier.subject == WebhookDelivery.subject,
                           earlier.status == "pending", earlier.id < WebhookDelivery.id))))
    return blocked


class _Ledger:
    """The sharing ledger rows of first attempts (as :func:`.sharing.record_webhook_sharing` writes them);
    the recipient's name read once per endpoint."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.names: dict[uuid.UUID, str] = {}

    def row(self, endpoint: WebhookEndpoint, delivery: WebhookDelivery, now: datetime) -> dict[str, Any]:
        if endpoint.id not in self.names:
            host = urlsplit(endpoint.url).hostname or endpoint.url
            self.names[endpoint.id] = f"{owner_name(self.session, endpoint.owner)} ({host})"
        return {"id": new_id(), "user_id": delivery.user_id, "at": now, "channel": "webhook",
                "recipient": self.names[endpoint.id][:300], "recipient_id": str(endpoint.id),
                "recipient_owner": endpoint.owner, "event_type": delivery.event_type,
                "fields": field_paths(delivery.payload.get("data")), "reference_id": str(delivery.id)}


def claim(database: Database, items: Sequence[Item], now: datetime) -> tuple[list[Claim], dict[uuid.UUID, str]]:
    """Claim what can be sent now (committed); the claims in id order, and the status of every other one."""
    outbox_ids: dict[uuid.UUID, list[int | None]] = defaultdict(list)
    for delivery_id, outbox_id in items:
        outbox_ids[delivery_id].append(outbox_id)
    settings = database.settings
    statuses: dict[uuid.UUID, str] = {}
    left_open: set[uuid.UUID] = set()  # another worker is sending it: its message stays open
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        deliveries = _lock_deliveries(session, list(outbox_ids))
        webhook_ids = sorted({d.webhook_id for d in deliveries.values()})
        endpoints = {e.id: e for chunk in chunks(webhook_ids) for e in session.scalars(
            select(WebhookEndpoint).where(among(session, WebhookEndpoint.id, chunk)))}
        pending = [d for d in deliveries.values() if d.status == "pending"]
        consenting = consenting_users(session, {d.user_id for d in pending if d.user_id is not None}, PARTNER_SHARING)
        blocked = _behind_earlier(session, [d.id for d in pending])
        free = {w: in_flight(session, w, now) < settings.webhook_max_in_flight for w in webhook_ids}
        # An endpoint whose last attempt failed gets one delivery of the batch as a probe; the others wait
        # for its success instead of being claimed and given back.
        probing = {w for w, e in endpoints.items() if (e.consecutive_failures or 0) > 0}
        probed: set[uuid.UUID] = set()
        chosen: list[WebhookDelivery] = []
        released: dict[uuid.UUID, set[str]] = defaultdict(set)
        for delivery_id in sorted(outbox_ids):
            delivery = deliveries.get(delivery_id)
            statuses[delivery_id] = "skipped"
            if delivery is None or delivery.status != "pending":
                continue
            if delivery.sending_since is not None and delivery.sending_since > now - STALE_SEND:
                left_open.add(delivery_id)  # redelivered if that worker dies
                continue
            if delivery.next_attempt_at is not None and delivery.next_attempt_at > now + timedelta(seconds=1):
                continue  # early or superseded: the message for the due time exists
            endpoint = endpoints.get(delivery.webhook_id)
            if endpoint is None or not endpoint.enabled:
                settle(delivery, "failed", "endpoint disabled", now)
                released[delivery.webhook_id].add(delivery.subject)
            elif delivery.user_id is not None and delivery.user_id not in consenting:
                settle(delivery, "cancelled", CONSENT_WITHDRAWN, now)
                released[delivery.webhook_id].add(delivery.subject)
            elif delivery.id in blocked:
                pass  # an earlier one of the same subject is pending: it queues this one when it settles
            elif delivery.sending_since is None and (not free[delivery.webhook_id] or delivery.webhook_id in probed):
                # The endpoint is busy (slow or dead?): wait without holding a worker slot; a batch to it
                # that finishes queues this one again (release_waiting).
                delivery.waiting_since = delivery.waiting_since or now
            else:
                chosen.append(delivery)
                if delivery.webhook_id in probing:
                    probed.add(delivery.webhook_id)
        claims = _claim_chosen(session, chosen, endpoints, now, settings)
        for webhook_id, subjects in released.items():
            release_next(uow, webhook_id, subjects, now)
        # A claimed delivery's messages are finished with its send (a worker dying mid-send leaves them open).
        left_open.update(d.id for d in chosen)
        complete_messages(session, [o for d, ids in outbox_ids.items() if d not in left_open for o in ids])
        uow.commit()
    return claims, statuses


def _claim_chosen(session: Session, chosen: list[WebhookDelivery], endpoints: dict[uuid.UUID, WebhookEndpoint],
                  now: datetime, settings: Any) -> list[Claim]:
    """Record an attempt for each chosen delivery (one claim id: one slot); the claims.

    Three bulk statements (deliveries, attempts, ledger) instead of the ORM's
    per-object bookkeeping: the transaction commits right after, and the loaded
    objects are not used again.
    """
    taken_over = [d.id for d in chosen if d.sending_since is not None]
    for chunk in chunks(taken_over):  # claimed by a worker that died mid-send
        session.execute(update(WebhookAttempt).where(among(session, WebhookAttempt.delivery_id, chunk),
                                                     WebhookAttempt.status == "sending")
                        .values(status="failed", error="the worker stopped during the send", finished_at=now)
                        .execution_options(synchronize_session=False))
    claim_id = new_id()
    ledger = _Ledger(session)
    secrets = {w: active_secrets(settings, e, now) for w, e in endpoints.items() if e.enabled}
    claims, numbers, attempts, shared = [], [], [], []
    for delivery in chosen:
        endpoint = endpoints[delivery.webhook_id]
        if delivery.user_id is not None and delivery.attempts == 0:
            shared.append(ledger.row(endpoint, delivery, now))
        number = delivery.attempts + 1
        attempt_id = new_id()
        numbers.append({"b_id": delivery.id, "b_attempts": number})
        attempts.append({"id": attempt_id, "delivery_id": delivery.id, "number": number, "status": "sending",
                         "started_at": now})
        claims.append(Claim(delivery.id, attempt_id, endpoint.id, endpoint.url, body_bytes(delivery.payload),
                            secrets[endpoint.id]))
    if numbers:
        session.execute(
            update(WebhookDelivery.__table__).where(WebhookDelivery.__table__.c.id == bindparam("b_id"))
            .values(attempts=bindparam("b_attempts"), waiting_since=None, sending_since=now, updated_at=now,
                    claim_id=claim_id), numbers)
        session.execute(insert(WebhookAttempt.__table__), attempts)
    if shared:
        session.execute(insert(SharingLedgerEntry.__table__), shared)
    return claims


def _endpoint_trouble(outcome: Any) -> bool:
    """True when the answer says the endpoint itself is in trouble (no answer, 429, 5xx, 410), not this body."""
    return outcome.status_code is None or outcome.status_code in (410, 429) or outcome.status_code >= 500


def send(claims: Sequence[Claim], settings: Any, clock: Any, sender: Sender | None = None,
         budget_s: float = SEND_BUDGET_S, concurrency: int = SEND_CONCURRENCY
         ) -> tuple[list[tuple[Claim, Any]], list[Claim]]:
    """Sign and send the claims over kept-alive connections; (sent with outcomes, not sent), in claim order.

    Each endpoint's first claim goes alone; once it answered well the rest go
    ``concurrency`` at a time (deliveries of one subject are never claimed
    together, so their order holds). An endpoint that failed to answer gets
    nothing more from this batch, and no send starts after ``budget_s``: what
    is left is given back by :func:`finish`.
    """
    from ..webhooks.signing import sign_headers
    from ..webhooks.transport import make_client, send_webhook

    options = transport_options(settings)
    client = options["client"] = make_client(max_connections=concurrency)  # a ``sender`` gets it too
    started = time.monotonic()
    troubled: set[uuid.UUID] = set()
    outcomes: dict[int, Any] = {}
    lock = threading.Lock()

    def one(index: int) -> None:
        item = claims[index]
        with lock:
            if item.webhook_id in troubled or time.monotonic() - started > budget_s:
                return
        headers = sign_headers(message_id(item.delivery_id), clock(), item.body, item.secrets)
        outcome = (sender or send_webhook)(item.url, item.body, headers, **options)
        with lock:
            outcomes[index] = outcome
            if _endpoint_trouble(outcome):
                troubled.add(item.webhook_id)

    first: dict[uuid.UUID, int] = {}
    for index, item in enumerate(claims):
        first.setdefault(item.webhook_id, index)
    rest = [i for i in range(len(claims)) if i not in set(first.values())]
    try:
        for index in first.values():  # the probe of each endpoint: is it answering at all?
            one(index)
        if concurrency <= 1 or len(rest) <= 1:
            for index in rest:
                one(index)
        else:
            with ThreadPoolExecutor(min(concurrency, len(rest))) as pool:
                list(pool.map(one, rest))
    finally:
        client.close()
    sent = [(claims[i], outcomes[i]) for i in sorted(outcomes)]
    return sent, [claims[i] for i in range(len(claims)) if i not in outcomes]


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
    attempts, delivered = WebhookAttempt.__table__, WebhookDelivery.__table__
    session.execute(
        update(attempts).where(attempts.c.id == bindparam("b_id"))
        .values(status="succeeded", status_code=bindparam("b_code"), latency_ms=bindparam("b_latency"),
                error=None, finished_at=now),
        [{"b_id": item.attempt_id, "b_code": o.status_code, "b_latency": o.latency_ms} for item, o in plain])
    session.execute(
        update(delivered).where(delivered.c.id == bindparam("b_id"))
        .values(status="delivered", status_reason=None, next_attempt_at=None, sending_since=None, claim_id=None,
                last_status_code=bindparam("b_code"), last_error=None, delivered_at=now, updated_at=now),
        [{"b_id": item.delivery_id, "b_code": o.status_code} for item, o in plain])


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
        deliveries = _lock_deliveries(session, [c.delivery_id for c in claims], payload=False)
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
        complete_messages(session, outbox_ids)
        uow.commit()
    return statuses


def deliver_webhooks(source: Any, items: Sequence[Item], *, now: datetime | None = None,
                     sender: Sender | None = None, rng: random.Random | None = None) -> dict[uuid.UUID, str]:
    """Send a batch of deliveries (``(delivery_id, outbox_id)`` items); what became of each.

    ``source`` is the container or the database. Idempotent: run again (a
    redelivered task) nothing is sent a second time. ``now`` fixes the clock
    and ``sender`` replaces the HTTP transport (tests).
    """
    database: Database = getattr(source, "database", source)
    clock = (lambda: now) if now is not None else utcnow
    claims, statuses = claim(database, items, clock())
    if not claims:
        return statuses
    sent, unsent = send(claims, database.settings, clock, sender)
    claimed = {c.delivery_id for c in claims}
    statuses.update(finish(database, sent, unsent, [o for d, o in items if d in claimed], clock(), rng))
    ok = sum(1 for _, outcome in sent if outcome.ok)
    log.info("webhooks sent", extra={"sent": len(sent), "ok": ok, "not_sent": len(unsent),
                                     "latency_ms": max((o.latency_ms for _, o in sent), default=0)})
    return statuses
