"""Push one suggestion to each active device of its user, once (docs/engine.md section 5).

Three kinds of transaction, so that a task run twice (or killed and run
again) pushes each device once:

1. claim: under the user's lock, a ``push_attempts`` row (``sending``) per
   device not yet pushed in this round, committed *before* anything is sent;
2. per device: send through its provider, then finish its attempt
   (``sent``/``failed``, error, latency) — a dead token deactivates the device;
3. settle: the suggestion's ``delivery_status`` (``delivered`` when one device
   got it, ``failed`` when none did) and ``new`` → ``delivered``, with the
   outbox message completed in the same commit.

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
from typing import Any, Callable

from sqlalchemy import select

from ..config import Settings
from ..db import Database
from ..delivery import PushMessage, PushProvider, PushResult, fit_payload, provider_for
from ..models import Device, PushAttempt, Suggestion
from ..timeutil import utcnow
from . import attention, outbox
from .consents import has_consent
from .suggestions import lock_user

log = logging.getLogger(__name__)

STALE_CLAIM = timedelta(minutes=2)
ProviderChooser = Callable[[Any, Settings], PushProvider]


@dataclass(frozen=True)
class DeliveryReport:
    """What one run did: pushes sent and failed now, and the suggestion's delivery status (None: unchanged)."""

    sent: int = 0
    failed: int = 0
    delivery_status: str | None = None


@dataclass(frozen=True)
class _Claim:
    attempt_id: uuid.UUID
    message: PushMessage
    provider: PushProvider


def _claim(database: Database, suggestion_id: uuid.UUID, outbox_id: int | None, now: datetime,
           settings: Settings, choose: ProviderChooser) -> tuple[list[_Claim] | None, str | None]:
    """Claim the devices to push in this round (maybe none left: settle then).

    (None, final delivery status or None) when there is nothing to push at all.
    """
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        user_id = session.scalar(select(Suggestion.user_id).where(Suggestion.id == suggestion_id))
        suggestion = None
        if user_id is not None and lock_user(session, user_id) is not None:
            suggestion = session.get(Suggestion, suggestion_id, populate_existing=True)
        if suggestion is None or suggestion.status != "new" or suggestion.pushed_at is None \
                or suggestion.deliver_after is not None:
            # Gone, acted on, settled already, or waiting for quiet hours to end: nothing to push now.
            if suggestion is not None and suggestion.status not in ("new", "snoozed") \
                    and suggestion.delivery_status == "pending":
                suggestion.delivery_status = "none"  # the user acted on it before it was pushed
            outbox.complete(session, outbox_id)
            uow.commit()
            return None, None
        final = None
        if suggestion.expires_at <= now:
            suggestion.status, suggestion.status_reason = "expired", "expired"
            suggestion.delivery_status = final = "none"
        elif not has_consent(session, suggestion.user_id, "proactive_push"):
            # Withdrawn since the budget let it through.
            suggestion.status, suggestion.status_reason = "suppressed", attention.NO_CONSENT
            suggestion.delivery_status = final = "none"
        devices = list(session.scalars(select(Device).where(
            Device.user_id == suggestion.user_id, Device.active.is_(True)).order_by(Device.id)))
        if suggestion.status == "new" and not devices:
            suggestion.delivery_status = final = "none"  # stays in the inbox
        if suggestion.status != "new" or not devices:
            outbox.complete(session, outbox_id)
            uow.commit()
            return None, final
        round_ = suggestion.push_round
        attempts = {a.device_id: a for a in session.scalars(select(PushAttempt).where(
            PushAttempt.suggestion_id == suggestion.id, PushAttempt.round == round_))}
        claims: list[_Claim] = []
        for device in devices:
            attempt = attempts.get(device.id)
            provider = choose(device, settings)
            if attempt is None:
                attempt = PushAttempt(suggestion_id=suggestion.id, device_id=device.id, round=round_,
                                      provider=provider.name, status="sending", started_at=now)
                session.add(attempt)
            elif attempt.status == "sending" and attempt.started_at <= now - STALE_CLAIM:
                attempt.provider, attempt.started_at = provider.name, now  # its worker died mid-send
            else:
                continue  # done already, or another worker is sending it right now
            session.flush()
            message = PushMessage(
                user_id=suggestion.user_id, device_id=device.id, platform=device.platform,
                suggestion_id=suggestion.id, kind=suggestion.kind, title=suggestion.title, body=suggestion.body,
                collapse_key=suggestion.collapse_key, expires_at=suggestion.expires_at, at=now,
                token=device.token, subscription=device.subscription)
            claims.append(_Claim(attempt.id, fit_payload(message), provider))
        uow.commit()
        return claims, None


def _send(provider: PushProvider, message: PushMessage) -> PushResult:
    started = time.perf_counter()
    try:
        return provider.send(message)
    except Exception as exc:  # a provider bug must not lose the other devices' pushes
        log.exception("push provider failed", extra={"provider": provider.name})
        return PushResult("failed", int((time.perf_counter() - started) * 1000), error=f"provider error: {exc}")


def _finish(database: Database, claim: _Claim, result: PushResult, now: datetime) -> None:
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        attempt = session.get(PushAttempt, claim.attempt_id)
        if attempt is None:  # the suggestion or device was deleted meanwhile
            return
        attempt.status = "sent" if result.ok else "failed"
        attempt.error = result.error[:2000] if result.error else None
        attempt.latency_ms, attempt.finished_at = result.latency_ms, now
        if result.token_dead:
            device = session.get(Device, claim.message.device_id)
            if device is not None and device.active:
                device.active = False
                device.deactivated_reason = f"push service no longer knows the device ({attempt.provider})"
        uow.commit()


def _settle(database: Database, suggestion_id: uuid.UUID, outbox_id: int | None, now: datetime) -> str | None:
    """Set the delivery status from this round's attempts once none is in flight; the status set (or None)."""
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        user_id = session.scalar(select(Suggestion.user_id).where(Suggestion.id == suggestion_id))
        if user_id is None or lock_user(session, user_id) is None:
            return None
        suggestion = session.get(Suggestion, suggestion_id, populate_existing=True)
        assert suggestion is not None
        attempts = list(session.scalars(select(PushAttempt).where(
            PushAttempt.suggestion_id == suggestion_id, PushAttempt.round == suggestion.push_round)))
        if any(a.status == "sending" for a in attempts):
            # Another worker is still sending: it settles (the message stays open in case it dies).
            return None
        sent = [a.finished_at or now for a in attempts if a.status == "sent"]
        if sent:
            suggestion.delivery_status, suggestion.delivered_at = "delivered", min(sent)
            if suggestion.status == "new":
                suggestion.status = "delivered"
        elif attempts:
            suggestion.delivery_status = "failed"
        outbox.complete(session, outbox_id)
        uow.commit()
        return suggestion.delivery_status


def deliver_suggestion(source: Any, suggestion_id: uuid.UUID, outbox_id: int | None = None, *,
                       now: datetime | None = None, choose: ProviderChooser = provider_for) -> DeliveryReport:
    """Push the suggestion to each active device of its user that has not had it in this round.

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
    sent = failed = 0
    for claim in claims:
        result = _send(claim.provider, claim.message)
        _finish(database, claim, result, clock())
        sent, failed = (sent + 1, failed) if result.ok else (sent, failed + 1)
    status = _settle(database, suggestion_id, outbox_id, clock())
    log.info("suggestion pushed", extra={"suggestion_id": str(suggestion_id), "sent": sent, "failed": failed})
    return DeliveryReport(sent=sent, failed=failed, delivery_status=status)
