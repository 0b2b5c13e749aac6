"""Send one webhook delivery: claim → sign and send → finish (retry, give up or disable).

One task per delivery (:data:`~.webhook_events.DELIVER_TASK`, on its own
queue), in three steps so that a task run twice sends once:

1. claim (committed before the send): skip a delivery that is settled,
   being sent by another worker, not due yet, or behind an earlier pending
   delivery of the same endpoint and subject (ordering: that one releases it
   when it settles); cancel it when the user withdrew ``partner_sharing``;
   wait for a slot when the endpoint already has ``SMARTSVC_WEBHOOK_MAX_IN_FLIGHT``
   sends in flight (isolation: a slow or dead endpoint holds that many
   worker slots at most; each send that finishes releases the earliest
   waiting delivery); otherwise record the attempt (and, on the first one,
   the sharing ledger);
2. send, signed with the endpoint's secrets (both during a rotation), with
   the same ``webhook-id`` on every attempt;
3. finish: success; or the next try per ``SMARTSVC_WEBHOOK_RETRY_SCHEDULE``
   (jittered, a longer ``Retry-After`` wins), giving up when it is used up;
   410 disables the endpoint at once, failing without a success for
   ``SMARTSVC_WEBHOOK_DISABLE_AFTER_S`` too (a ``webhook.disabled`` notice).
"""

from __future__ import annotations

import json
import logging
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Sequence

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ..config import Settings
from ..db import Database, UnitOfWork
from ..models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookNotice
from ..timeutil import utcnow
from . import outbox
from .consents import has_consent
from .sharing import record_webhook_sharing
from .webhook_events import CONSENT_WITHDRAWN, PARTNER_SHARING, breaker_open, enqueue_delivery, field_paths
from .webhook_secrets import active_secrets

log = logging.getLogger(__name__)

# A claim older than this is from a worker that died mid-send (the send itself is bounded by the timeout).
STALE_SEND = timedelta(minutes=2)
# A delivery waiting for a slot this long with nothing in flight to its endpoint missed its release.
STRANDED_AFTER = timedelta(minutes=1)
JITTER = 0.1
MAX_RETRY_AFTER_S = 86400
Sender = Callable[..., Any]


@dataclass(frozen=True)
class _Send:
    delivery_id: uuid.UUID
    attempt_id: uuid.UUID
    url: str
    body: bytes
    secrets: list[str]


def message_id(delivery_id: uuid.UUID) -> str:
    """The ``webhook-id`` of a delivery: the same on every attempt, so partners can deduplicate."""
    return f"msg_{delivery_id.hex}"


def body_bytes(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed) for a delivery's payload."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def next_delay(schedule: Sequence[int], attempts_done: int, retry_after_s: float | None,
               rng: random.Random | None = None) -> timedelta | None:
    """The wait before the next try after ``attempts_done`` tries, or None when the schedule is used up.

    ``schedule[n]`` is the wait before try n+1 (``schedule[0]`` the first,
    normally 0), varied by ±10 % so that many deliveries failing together do
    not retry together; a ``Retry-After`` longer than that wins (at most a day).
    """
    if attempts_done >= len(schedule):
        return None
    base = float(schedule[attempts_done])
    seconds = base * (rng or random).uniform(1 - JITTER, 1 + JITTER) if base else 0.0
    if retry_after_s is not None and retry_after_s > seconds:
        seconds = min(float(retry_after_s), MAX_RETRY_AFTER_S)
    return timedelta(seconds=seconds)


def release_next(uow: UnitOfWork, webhook_id: uuid.UUID, subject: str, now: datetime) -> None:
    """Queue the earliest pending delivery of this endpoint and subject (it waited for the one settled)."""
    session = uow.session
    assert session is not None
    following = session.scalar(
        select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id, WebhookDelivery.subject == subject,
                                      WebhookDelivery.status == "pending", WebhookDelivery.sending_since.is_(None))
        .order_by(WebhookDelivery.id).limit(1))
    if following is not None:
        due = max(now, following.next_attempt_at or now)
        following.next_attempt_at = due
        enqueue_delivery(uow, following, due)


def _in_flight(session: Session, webhook_id: uuid.UUID, now: datetime) -> int:
    """Sends to this endpoint in flight now (a claim older than :data:`STALE_SEND` is a dead worker's)."""
    return session.scalar(select(func.count()).select_from(WebhookDelivery).where(
        WebhookDelivery.webhook_id == webhook_id, WebhookDelivery.sending_since > now - STALE_SEND)) or 0


def release_waiting(uow: UnitOfWork, webhook_id: uuid.UUID, now: datetime) -> int:
    """Queue the endpoint's earliest deliveries waiting for a slot, as many as there are free slots; how many."""
    session = uow.session
    assert session is not None
    free = uow.database.settings.webhook_max_in_flight - _in_flight(session, webhook_id, now)
    if free <= 0:
        return 0
    waiting = session.scalars(
        select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id,
                                      WebhookDelivery.waiting_since.is_not(None),
                                      WebhookDelivery.status == "pending")
        .order_by(WebhookDelivery.id).limit(free)).all()
    for delivery in waiting:
        delivery.waiting_since = None
        enqueue_delivery(uow, delivery, now)
    return len(waiting)


def release_stranded(database: Database, now: datetime | None = None) -> int:
    """Release deliveries left waiting for a slot of an endpoint with nothing in flight; how many.

    A claim that saw the endpoint busy can commit its wait just after the
    last send to it finished (and released nothing): a scheduled sweep hands
    such deliveries their slots. Those waiting less than a minute are left to
    the sends finishing now.
    """
    now = now or utcnow()
    released = 0
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        endpoints = session.scalars(select(WebhookDelivery.webhook_id).where(
            WebhookDelivery.waiting_since.is_not(None), WebhookDelivery.status == "pending",
            WebhookDelivery.waiting_since < now - STRANDED_AFTER).distinct()).all()
        for webhook_id in endpoints:
            if _in_flight(session, webhook_id, now) == 0:
                released += release_waiting(uow, webhook_id, now)
        uow.commit()
    if released:
        log.warning("webhook deliveries released from a wait nobody ended", extra={"released": released})
    return released


def disable_endpoint(session: Session, endpoint: WebhookEndpoint, reason: str, now: datetime, *,
                     notice: bool = True) -> None:
    """Disable the endpoint, fail what waits for it and (``notice``) record a ``webhook.disabled`` notice."""
    endpoint.enabled = False
    endpoint.disabled_reason = reason[:500]
    endpoint.disabled_at = endpoint.updated_at = now
    if notice:
        session.add(WebhookNotice(webhook_id=endpoint.id, kind="webhook.disabled", message=reason[:1000], at=now))
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.webhook_id == endpoint.id, WebhookDelivery.status == "pending")
        .values(status="failed", status_reason=f"endpoint disabled: {reason}"[:500], next_attempt_at=None,
                updated_at=now)
        .execution_options(synchronize_session=False))
    log.warning("webhook endpoint disabled", extra={"webhook_id": str(endpoint.id), "reason": reason})


def _settle(uow: UnitOfWork, delivery: WebhookDelivery, status: str, reason: str | None, now: datetime) -> None:
    delivery.status, delivery.status_reason = status, reason
    delivery.next_attempt_at, delivery.updated_at = None, now
    release_next(uow, delivery.webhook_id, delivery.subject, now)


def _claim(database: Database, delivery_id: uuid.UUID, outbox_id: int | None, now: datetime) -> _Send | None:
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        delivery = session.get(WebhookDelivery, delivery_id, with_for_update=True, populate_existing=True)
        if delivery is None or delivery.status != "pending":
            outbox.complete(session, outbox_id)
            uow.commit()
            return None
        if delivery.sending_since is not None and delivery.sending_since > now - STALE_SEND:
            return None  # another worker is sending it; this message stays open (redelivered if that one dies)
        if delivery.next_attempt_at is not None and delivery.next_attempt_at > now + timedelta(seconds=1):
            outbox.complete(session, outbox_id)  # early or superseded: the message for the due time exists
            uow.commit()
            return None
        endpoint = session.get(WebhookEndpoint, delivery.webhook_id)
        if endpoint is None or not endpoint.enabled:
            _settle(uow, delivery, "failed", "endpoint disabled", now)
        elif delivery.user_id is not None and not has_consent(session, delivery.user_id, PARTNER_SHARING):
            _settle(uow, delivery, "cancelled", CONSENT_WITHDRAWN, now)
        elif session.scalar(select(WebhookDelivery.id).where(
                WebhookDelivery.webhook_id == delivery.webhook_id, WebhookDelivery.subject == delivery.subject,
                WebhookDelivery.status == "pending", WebhookDelivery.id < delivery.id).limit(1)) is not None:
            pass  # an earlier one of the same subject is pending: it queues this one when it settles
        elif delivery.sending_since is None \
                and _in_flight(session, delivery.webhook_id, now) >= database.settings.webhook_max_in_flight:
            # The endpoint is busy (slow or dead?): wait without holding a worker slot; a send to it that
            # finishes queues this one again (release_waiting).
            delivery.waiting_since = delivery.waiting_since or now
        else:
            delivery.waiting_since = None
            if delivery.user_id is not None and delivery.attempts == 0:
                record_webhook_sharing(session, endpoint, user_id=delivery.user_id, event_type=delivery.event_type,
                                       fields=field_paths(delivery.payload.get("data")), delivery_id=delivery.id,
                                       at=now)
            if delivery.sending_since is not None:  # taken over from a worker that died mid-send
                session.execute(update(WebhookAttempt).where(
                    WebhookAttempt.delivery_id == delivery.id, WebhookAttempt.status == "sending")
                    .values(status="failed", error="the worker stopped during the send", finished_at=now))
            delivery.attempts += 1
            delivery.sending_since = delivery.updated_at = now
            attempt = WebhookAttempt(delivery_id=delivery.id, number=delivery.attempts, status="sending",
                                     started_at=now)
            session.add(attempt)
            session.flush()
            claim = _Send(delivery.id, attempt.id, endpoint.url, body_bytes(delivery.payload),
                          active_secrets(database.settings, endpoint, now))
            uow.commit()
            return claim
        outbox.complete(session, outbox_id)
        uow.commit()
        return None


def _finish(database: Database, claim: _Send, outcome: Any, outbox_id: int | None, now: datetime,
            rng: random.Random | None) -> str:
    settings = database.settings
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        # The endpoint first, then the delivery: the order disabling an endpoint (PATCH) locks them in.
        webhook_id = session.scalar(select(WebhookDelivery.webhook_id).where(WebhookDelivery.id == claim.delivery_id))
        endpoint = session.get(WebhookEndpoint, webhook_id, with_for_update=True, populate_existing=True) \
            if webhook_id is not None else None
        delivery = session.get(WebhookDelivery, claim.delivery_id, with_for_update=True, populate_existing=True)
        attempt = session.get(WebhookAttempt, claim.attempt_id)
        if endpoint is None or delivery is None or attempt is None:  # the endpoint was deleted meanwhile
            outbox.complete(session, outbox_id)
            uow.commit()
            return "deleted"
        attempt.status = "succeeded" if outcome.ok else "failed"
        attempt.status_code, attempt.latency_ms = outcome.status_code, outcome.latency_ms
        attempt.error = outcome.error[:2000] if outcome.error else None
        attempt.finished_at = now
        delivery.sending_since = None
        delivery.last_status_code, delivery.last_error = attempt.status_code, attempt.error
        if outcome.ok:
            delivery.delivered_at = now
            endpoint.failing_since, endpoint.consecutive_failures = None, 0
            _settle(uow, delivery, "delivered", None, now)
        else:
            endpoint.failing_since = endpoint.failing_since or now
            endpoint.consecutive_failures = (endpoint.consecutive_failures or 0) + 1
            failing_for = now - endpoint.failing_since
            reason = None
            if outcome.gone:
                reason = "the endpoint answered 410 Gone"
            elif failing_for >= timedelta(seconds=settings.webhook_disable_after_s):
                reason = f"every attempt failed for {failing_for} (since {endpoint.failing_since.isoformat()})"
            if reason is not None and endpoint.enabled:
                disable_endpoint(session, endpoint, reason, now)  # fails every pending delivery of it
                delivery.status, delivery.status_reason = "failed", f"endpoint disabled: {reason}"[:500]
                delivery.next_attempt_at, delivery.updated_at = None, now
            elif delivery.status == "pending":
                delay = next_delay(settings.webhook_retry_schedule, delivery.attempts, outcome.retry_after_s, rng)
                if delay is None:
                    _settle(uow, delivery, "failed", f"gave up after {delivery.attempts} attempts", now)
                else:
                    attempt.next_retry_at = delivery.next_attempt_at = now + delay
                    delivery.updated_at = now
                    enqueue_delivery(uow, delivery, now + delay)
            else:
                release_next(uow, delivery.webhook_id, delivery.subject, now)
        session.flush()  # this send no longer counts as in flight
        if outcome.ok or not breaker_open(endpoint):
            # A failure of an endpoint whose breaker is open releases nothing: the waiting would only fail too.
            release_waiting(uow, endpoint.id, now)
        outbox.complete(session, outbox_id)
        uow.commit()
        return delivery.status


def _transport_options(settings: Settings) -> dict[str, Any]:
    return {"allow_private": settings.webhook_allow_private, "allow_http": settings.webhook_allow_http,
            "timeout_s": settings.webhook_timeout_s}


def deliver_webhook(source: Any, delivery_id: uuid.UUID, outbox_id: int | None = None, *,
                    now: datetime | None = None, sender: Sender | None = None,
                    rng: random.Random | None = None) -> str:
    """Try to send one delivery; what became of it (``delivered``, ``pending``, ``failed``, ``skipped``...).

    ``source`` is the container or the database. Idempotent: run again (a
    redelivered task) it sends nothing a second time. ``now`` fixes the
    clock and ``sender`` replaces the HTTP transport (tests).
    """
    from ..webhooks.signing import sign_headers
    from ..webhooks.transport import send_webhook

    database: Database = getattr(source, "database", source)
    clock = (lambda: now) if now is not None else utcnow
    claim = _claim(database, delivery_id, outbox_id, clock())
    if claim is None:
        return "skipped"
    headers = sign_headers(message_id(claim.delivery_id), clock(), claim.body, claim.secrets)
    outcome = (sender or send_webhook)(claim.url, claim.body, headers, **_transport_options(database.settings))
    status = _finish(database, claim, outcome, outbox_id, clock(), rng)
    log.info("webhook sent", extra={"delivery_id": str(delivery_id), "ok": outcome.ok,
                                    "status_code": outcome.status_code, "latency_ms": outcome.latency_ms})
    return status
