"""Push one suggestion to each active device of its user, once, and again later when the push service asks.

Three kinds of transaction, so that a task run twice (or killed and run
again) pushes each device once:

1. claim: under the user's lock, a ``push_attempts`` row (``sending``) per
   device to push now — never pushed in this round, or its last try failed
   with a retry that is due — committed *before* anything is sent;
2. per device: send through its provider, then finish its try
   (``sent``/``failed``, error, HTTP status, latency). A try the push service
   asked to repeat (429, 5xx, network) gets ``retry_at`` (backoff, or a
   longer ``Retry-After``) until the tries run out or the suggestion would
   expire first; a dead token deactivates the device at once;
3. settle: the suggestion's ``delivery_status`` — ``delivered`` when one
   device got it, ``pending`` while no device did and retries are due later,
   ``failed`` when every device ended without it — and ``new`` →
   ``delivered``; with pending retries a delayed outbox message (its
   ``available_at`` the earliest ``retry_at``) brings the task back. The
   outbox message is completed in the same commit.

A claim left ``sending`` by a worker that died is taken over after
:data:`STALE_CLAIM` (that device may then get it twice: at least once, and
the collapse key makes the phone show one).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..config import Settings
from ..db import Database, UnitOfWork
from ..delivery import PushMessage, PushProvider, PushResult, fit_payload, provider_for
from ..models import Device, OutboxMessage, PushAttempt, Suggestion
from ..timeutil import utcnow
from . import attention, journal, outbox
from .consents import has_consent
from .suggestions import PUSH_TASK, lock_user

log = logging.getLogger(__name__)

STALE_CLAIM = timedelta(minutes=2)
# A suggestion already on one of the user's phones still goes to the others that are due a retry.
PUSHABLE = ("new", "delivered")
ProviderChooser = Callable[[Any, Settings], PushProvider]


@dataclass(frozen=True)
class DeliveryReport:
    """What one run did: tries sent and failed now (``retrying`` of those failed are tried again later),
    and the suggestion's delivery status (None: unchanged)."""

    sent: int = 0
    failed: int = 0
    delivery_status: str | None = None
    retrying: int = 0


@dataclass(frozen=True)
class _Claim:
    attempt_id: uuid.UUID
    message: PushMessage
    provider: PushProvider
    try_number: int


def _latest(attempts: Iterable[PushAttempt]) -> dict[uuid.UUID, PushAttempt]:
    """Each device's try with the highest number: where that device stands in the round."""
    latest: dict[uuid.UUID, PushAttempt] = {}
    for attempt in attempts:
        if attempt.device_id not in latest or attempt.try_number > latest[attempt.device_id].try_number:
            latest[attempt.device_id] = attempt
    return latest


def _round_attempts(session: Session, suggestion: Suggestion) -> list[PushAttempt]:
    return list(session.scalars(select(PushAttempt).where(
        PushAttempt.suggestion_id == suggestion.id, PushAttempt.round == suggestion.push_round)))


def _stop(suggestion: Suggestion, attempts: list[PushAttempt]) -> str:
    """No more pushes in this round: what became of the delivery (``failed`` if a try was made and none got it)."""
    if suggestion.delivery_status == "pending":
        suggestion.delivery_status = "failed" if attempts else "none"
    return suggestion.delivery_status


def _claim(database: Database, suggestion_id: uuid.UUID, outbox_id: int | None, now: datetime,
           settings: Settings, choose: ProviderChooser) -> tuple[list[_Claim] | None, str | None]:
    """Claim the devices to push now (maybe none: settle then).

    (None, final delivery status or None) when there is nothing to push at all.
    """
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        user_id = session.scalar(select(Suggestion.user_id).where(Suggestion.id == suggestion_id))
        suggestion = None
        if user_id is not None and lock_user(session, user_id) is not None:
            suggestion = session.get(Suggestion, suggestion_id, populate_existing=True)
        if suggestion is None or suggestion.status not in PUSHABLE or suggestion.pushed_at is None \
                or suggestion.deliver_after is not None:
            # Gone, acted on, or waiting for quiet hours to end: nothing to push now.
            if suggestion is not None and suggestion.status not in ("new", "snoozed") \
                    and suggestion.delivery_status == "pending":
                suggestion.delivery_status = "none"  # the user acted on it before it was pushed
            outbox.complete(session, outbox_id)
            uow.commit()
            return None, None
        attempts = _round_attempts(session, suggestion)
        latest = _latest(attempts)
        if suggestion.status == "delivered" and not any(
                a.status == "sending" or a.retry_at is not None and a.status == "failed" for a in latest.values()):
            outbox.complete(session, outbox_id)  # settled, no retry left for another device: a rerun
            uow.commit()
            return None, None
        final = None
        if suggestion.expires_at <= now:  # never pushed (nor retried) past its expiry
            suggestion.status, suggestion.status_reason = "expired", "expired"
            final = _stop(suggestion, attempts)
        elif not has_consent(session, suggestion.user_id, "proactive_push"):
            # Withdrawn since the budget let it through.
            if suggestion.status == "new":
                suggestion.status, suggestion.status_reason = "suppressed", attention.NO_CONSENT
            final = _stop(suggestion, attempts)
        devices = list(session.scalars(select(Device).where(
            Device.user_id == suggestion.user_id, Device.active.is_(True)).order_by(Device.id)))
        if final is None and not devices:
            final = _stop(suggestion, attempts)  # stays in the inbox
        if final is not None:
            outbox.complete(session, outbox_id)
            uow.commit()
            return None, final
        claims: list[_Claim] = []
        for device in devices:
            last = latest.get(device.id)
            provider = choose(device, settings)
            if last is None and suggestion.status == "new":
                attempt = PushAttempt(suggestion_id=suggestion.id, device_id=device.id, round=suggestion.push_round,
                                      try_number=1, provider=provider.name, status="sending", started_at=now)
                session.add(attempt)
            elif last is not None and last.status == "sending" and last.started_at <= now - STALE_CLAIM:
                attempt = last  # its worker died mid-send
                attempt.provider, attempt.started_at = provider.name, now
            elif last is not None and last.status == "failed" and last.retry_at is not None \
                    and last.retry_at <= now:
                attempt = PushAttempt(suggestion_id=suggestion.id, device_id=device.id, round=suggestion.push_round,
                                      try_number=last.try_number + 1, provider=provider.name, status="sending",
                                      started_at=now)
                session.add(attempt)
            else:
                continue  # done, a retry not due yet, or another worker is sending it right now
            session.flush()
            message = PushMessage(
                user_id=suggestion.user_id, device_id=device.id, platform=device.platform,
                suggestion_id=suggestion.id, kind=suggestion.kind, title=suggestion.title, body=suggestion.body,
                collapse_key=suggestion.collapse_key, expires_at=suggestion.expires_at, at=now,
                token=device.token, subscription=device.subscription)
            claims.append(_Claim(attempt.id, fit_payload(message), provider, attempt.try_number))
        uow.commit()
        return claims, None


def _send(provider: PushProvider, message: PushMessage) -> PushResult:
    started = time.perf_counter()
    try:
        return provider.send(message)
    except Exception as exc:  # a provider bug must not lose the other devices' pushes
        log.exception("push provider failed", extra={"provider": provider.name})
        return PushResult("failed", int((time.perf_counter() - started) * 1000), error=f"provider error: {exc}")


def retry_delay(settings: Settings, try_number: int, retry_after_s: float | None) -> timedelta:
    """The wait after failed try ``try_number``: its backoff step (the last repeats) or ``Retry-After``, the longer."""
    steps = settings.push_retry_backoff_s
    backoff = steps[min(try_number, len(steps)) - 1]
    return timedelta(seconds=max(float(backoff), retry_after_s or 0.0))


def _retry_at(settings: Settings, claim: _Claim, result: PushResult, now: datetime) -> tuple[datetime | None, str]:
    """When to try again (None: never) and what to add to the error."""
    if result.ok or not result.retryable:
        return None, ""
    if claim.try_number >= settings.push_max_tries:
        return None, f" (gave up after {claim.try_number} tries)"
    when = now + retry_delay(settings, claim.try_number, result.retry_after_s)
    if when >= claim.message.expires_at:
        return None, " (not tried again: the suggestion expires first)"
    return when, ""


def _registered_since(device: Device, dead_since: datetime | None) -> bool:
    """True when the device registered again after the push service saw its token die (APNs' timestamp)."""
    return dead_since is not None and max(device.created_at, device.last_seen_at) > dead_since


def _finish(database: Database, claim: _Claim, result: PushResult, now: datetime) -> datetime | None:
    """Record the try's outcome; returns when it is to be tried again (None: not)."""
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        attempt = session.get(PushAttempt, claim.attempt_id)
        if attempt is None:  # the suggestion or device was deleted meanwhile
            return None
        retry_at, note = _retry_at(database.settings, claim, result, now)
        attempt.status = "sent" if result.ok else "failed"
        error = f"{result.error or 'failed'}{note}" if not result.ok else result.error
        attempt.error = error[:2000] if error else None
        attempt.status_code, attempt.retry_at = result.status_code, retry_at
        attempt.latency_ms, attempt.finished_at = result.latency_ms, now
        if result.ok:  # the journal's "pushed" touchpoint, one per device that got it
            journal.record_push(session, claim.message, provider=attempt.provider, round_=attempt.round,
                                try_number=attempt.try_number, at=now)
        if result.token_dead:
            device = session.get(Device, claim.message.device_id)
            if device is not None and device.active and not _registered_since(device, result.token_dead_since):
                device.active = False
                device.deactivated_reason = f"push service no longer knows the device ({attempt.provider})"
        uow.commit()
        return retry_at


def _schedule_retry(uow: UnitOfWork, suggestion: Suggestion, outbox_id: int | None, when: datetime) -> None:
    """A delayed push message for the next due retry, unless this message was settled already (a rerun)."""
    session = uow.session
    assert session is not None
    if outbox_id is not None:
        current = session.get(OutboxMessage, outbox_id)
        if current is not None and current.completed_at is not None:
            return  # the first run of this message scheduled it
    message = outbox.enqueue(uow, PUSH_TASK, {"suggestion_id": str(suggestion.id)},
                             ordering_key=f"user:{suggestion.user_id}", user_id=suggestion.user_id)
    message.available_at = when


def _settle(database: Database, suggestion_id: uuid.UUID, outbox_id: int | None, now: datetime) -> str | None:
    """Set the delivery status from this round's tries once none is in flight; the status set (or None)."""
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        user_id = session.scalar(select(Suggestion.user_id).where(Suggestion.id == suggestion_id))
        if user_id is None or lock_user(session, user_id) is None:
            return None
        suggestion = session.get(Suggestion, suggestion_id, populate_existing=True)
        assert suggestion is not None
        latest = list(_latest(_round_attempts(session, suggestion)).values())
        if any(a.status == "sending" for a in latest):
            # Another worker is still sending: it settles (the message stays open in case it dies).
            return None
        sent = [a.finished_at or now for a in latest if a.status == "sent"]
        retries = [a.retry_at for a in latest if a.status == "failed" and a.retry_at is not None]
        if sent:
            suggestion.delivery_status, suggestion.delivered_at = "delivered", min(sent)
            if suggestion.status == "new":
                suggestion.status = "delivered"
        elif latest and not retries:
            suggestion.delivery_status = "failed"
        if retries and suggestion.status in PUSHABLE:
            _schedule_retry(uow, suggestion, outbox_id, min(retries))
        outbox.complete(session, outbox_id)
        uow.commit()
        return suggestion.delivery_status


def deliver_suggestion(source: Any, suggestion_id: uuid.UUID, outbox_id: int | None = None, *,
                       now: datetime | None = None, choose: ProviderChooser = provider_for) -> DeliveryReport:
    """Push the suggestion to each active device that has not had it in this round, or is due a retry.

    ``source`` is the container or the database. Idempotent: a second run
    (a redelivered task) sends nothing more. ``now`` fixes the clock
    (tests); ``choose`` picks each device's provider (default: by settings).
    """
    database: Database = getattr(source, "database", source)
    settings = database.settings
    clock = (lambda: now) if now is not None else utcnow
    claims, final = _claim(database, suggestion_id, outbox_id, clock(), settings, choose)
    if claims is None:
        return DeliveryReport(delivery_status=final)
    sent = failed = retrying = 0
    for claim in claims:
        result = _send(claim.provider, claim.message)
        retry_at = _finish(database, claim, result, clock())
        sent, failed = (sent + 1, failed) if result.ok else (sent, failed + 1)
        retrying += retry_at is not None
    status = _settle(database, suggestion_id, outbox_id, clock())
    log.info("suggestion pushed", extra={"suggestion_id": str(suggestion_id), "sent": sent, "failed": failed,
                                         "retrying": retrying})
    return DeliveryReport(sent=sent, failed=failed, delivery_status=status, retrying=retrying)
