"""Batched push delivery: claim a few hundred suggestions in one transaction, send, finish and settle in one more.

The semantics are those of :mod:`smartsvc.services.delivery` (read its
docstring); what changes is the cost: each step reads and writes the whole
batch with a handful of ``IN`` queries and bulk statements instead of ~16
statements per notification. Users are locked in id order in both
transactions, so two batches sharing users wait for each other instead of
deadlocking.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from datetime import datetime
from typing import Any, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db import Database, UnitOfWork
from ..delivery import PushMessage, PushResult, fit_payload, provider_for
from ..ids import new_id
from ..models import Device, Interaction, OutboxMessage, PushAttempt, Suggestion
from ..timeutil import utcnow
from . import attention, journal, outbox
from .bulk import among, chunks, insert_rows, update_rows
from .consents import consenting_users
from .delivery_rows import Fields, active_devices, load_locked, round_tries, write_changes
from .delivery import (PUSHABLE, Claim, DeliveryReport, ProviderChooser, latest_tries,
                       registered_since, retry_at, send_claims, stale_after, stop)
from .suggestions import PUSH_TASK

log = logging.getLogger(__name__)

# The Celery task that pushes a batch of suggestions (workers/tasks/delivery.py); the outbox relay groups
# due PUSH_TASK messages into it.
PUSH_BATCH_TASK = "smartsvc.delivery.push_batch"
Item = tuple[uuid.UUID, "int | None"]


def _claim_one(suggestion: Fields, attempts: list[Fields], devices: list[Fields], consented: bool,
               now: datetime, settings: Any, choose: ProviderChooser, rows: list[dict[str, Any]],
               claims: list[Claim]) -> tuple[bool, str | None]:
    """Claim this suggestion's devices (adding attempt rows to ``rows``); (settle it later?, final status)."""
    if suggestion.status not in PUSHABLE or suggestion.pushed_at is None or suggestion.deliver_after is not None:
        # Acted on, or waiting for quiet hours to end: nothing to push now.
        if suggestion.status not in ("new", "snoozed") and suggestion.delivery_status == "pending":
            suggestion.delivery_status = "none"  # the user acted on it before it was pushed
        return False, None
    latest = latest_tries(attempts)
    if suggestion.status == "delivered" and not any(
            a.status == "sending" or a.retry_at is not None and a.status == "failed" for a in latest.values()):
        return False, None  # settled, no retry left for another device: a rerun
    if suggestion.expires_at <= now:  # never pushed (nor retried) past its expiry
        suggestion.status, suggestion.status_reason = "expired", "expired"
        return False, stop(suggestion, attempts)
    if not consented:  # withdrawn since the budget let it through
        if suggestion.status == "new":
            suggestion.status, suggestion.status_reason = "suppressed", attention.NO_CONSENT
        return False, stop(suggestion, attempts)
    if not devices:
        return False, stop(suggestion, attempts)  # stays in the inbox
    for device in devices:
        last = latest.get(device.id)
        provider = choose(device, settings)
        if last is None and suggestion.status == "new":
            attempt_id, try_number = new_id(), 1
        elif last is not None and last.status == "sending" and last.started_at <= now - stale_after(settings):
            attempt_id, try_number = last.id, last.try_number  # its worker died mid-send
            last.provider, last.started_at = provider.name, now
        elif last is not None and last.status == "failed" and last.retry_at is not None and last.retry_at <= now:
            attempt_id, try_number = new_id(), last.try_number + 1
        else:
            continue  # done, a retry not due yet, or another worker is sending it right now
        if attempt_id != (last.id if last is not None else None):
            rows.append({"id": attempt_id, "suggestion_id": suggestion.id, "device_id": device.id,
                         "round": suggestion.push_round, "try_number": try_number, "provider": provider.name,
                         "status": "sending", "started_at": now})
        message = PushMessage(
            user_id=suggestion.user_id, device_id=device.id, platform=device.platform,
            suggestion_id=suggestion.id, kind=suggestion.kind, title=suggestion.title, body=suggestion.body,
            collapse_key=suggestion.collapse_key, expires_at=suggestion.expires_at, at=now,
            token=device.token, subscription=device.subscription)
        claims.append(Claim(attempt_id, fit_payload(message), provider, try_number, suggestion.push_round))
    return True, None


def _per_platform(choose: ProviderChooser) -> ProviderChooser:
    """``provider_for`` asked once per platform and batch (it goes by the platform alone); others as given."""
    if choose is not provider_for:
        return choose
    chosen: dict[str, Any] = {}

    def cached(device: Any, settings: Any) -> Any:
        if device.platform not in chosen:
            chosen[device.platform] = provider_for(device, settings)
        return chosen[device.platform]

    return cached


def _claim(database: Database, groups: dict[uuid.UUID, list[int | None]], now: datetime, choose: ProviderChooser
           ) -> tuple[list[Claim], list[uuid.UUID], dict[uuid.UUID, DeliveryReport]]:
    """One transaction: claim the batch's devices; (claims, suggestions to settle after the sends, done reports)."""
    settings = database.settings
    choose = _per_platform(choose)
    claims: list[Claim] = []
    to_settle: list[uuid.UUID] = []
    reports: dict[uuid.UUID, DeliveryReport] = {}
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        suggestions = load_locked(session, list(groups))
        tries = round_tries(session, suggestions.values())
        user_ids = {s.user_id for s in suggestions.values()}
        consented = consenting_users(session, user_ids, "proactive_push")
        devices = active_devices(session, user_ids)
        rows: list[dict[str, Any]] = []
        done: list[int | None] = []
        for suggestion_id, outbox_ids in groups.items():
            suggestion = suggestions.get(suggestion_id)
            settle, final = False, None
            if suggestion is not None:
                settle, final = _claim_one(suggestion, tries[suggestion_id], devices.get(suggestion.user_id, []),
                                           suggestion.user_id in consented, now, settings, choose, rows, claims)
            if settle:
                to_settle.append(suggestion_id)
            else:
                done.extend(outbox_ids)
                reports[suggestion_id] = DeliveryReport(delivery_status=final)
        write_changes(session, Suggestion.__table__, suggestions.values())  # the statuses set above
        write_changes(session, PushAttempt.__table__, (a for same in tries.values() for a in same))  # stale claims
        insert_rows(session, PushAttempt.__table__, rows)
        outbox.complete_many(session, done)
        uow.commit()
    return claims, to_settle, reports


def _finish(session: Session, claims: Sequence[Claim], results: Sequence[PushResult], now: datetime,
            settings: Any) -> dict[uuid.UUID, int]:
    """Record each try's outcome; the number of tries to be made again later, per suggestion."""
    existing: set[uuid.UUID] = set()
    for chunk in chunks([c.attempt_id for c in claims]):
        existing.update(session.scalars(select(PushAttempt.id).where(among(session, PushAttempt.id, chunk))))
    rows, pushed, dead, retrying = [], [], {}, defaultdict(int)
    for claim, result in zip(claims, results):
        if claim.attempt_id not in existing:  # the suggestion or device was deleted meanwhile
            continue
        when, note = retry_at(settings, claim, result, now)
        error = f"{result.error or 'failed'}{note}" if not result.ok else result.error
        rows.append({"id": claim.attempt_id, "status": "sent" if result.ok else "failed",
                     "error": error[:2000] if error else None, "status_code": result.status_code,
                     "retry_at": when, "latency_ms": result.latency_ms})
        retrying[claim.message.suggestion_id] += when is not None
        if result.ok:  # the journal's "pushed" touchpoint, one per device that got it
            pushed.append(journal.push_row(claim.message, provider=claim.provider.name, round_=claim.round,
                                           try_number=claim.try_number, at=now))
        if result.token_dead:
            dead[claim.message.device_id] = (claim.provider.name, result.token_dead_since)
    update_rows(session, PushAttempt.__table__, "id", rows, {"finished_at": now})
    insert_rows(session, Interaction.__table__, pushed)
    for chunk in chunks(sorted(dead)):
        for device in session.scalars(select(Device).where(among(session, Device.id, chunk))):
            provider, dead_since = dead[device.id]
            if device.active and not registered_since(device, dead_since):
                device.active = False
                device.deactivated_reason = f"push service no longer knows the device ({provider})"
    return retrying


def _schedule_retry(uow: UnitOfWork, suggestion: Fields, when: datetime) -> None:
    """A delayed push message for the next due retry."""
    message = outbox.enqueue(uow, PUSH_TASK, {"suggestion_id": str(suggestion.id)},
                             ordering_key=f"user:{suggestion.user_id}", user_id=suggestion.user_id)
    message.available_at = when


def _settle_one(uow: UnitOfWork, suggestion: Fields, attempts: list[Fields], rerun: bool,
                now: datetime) -> tuple[bool, str | None]:
    """Set the delivery status from this round's tries; (settled?, status). Not while a try is in flight."""
    latest = list(latest_tries(attempts).values())
    if any(a.status == "sending" for a in latest):
        # Another worker is still sending: it settles (the message stays open in case it dies).
        return False, None
    sent = [a.finished_at or now for a in latest if a.status == "sent"]
    retries = [a.retry_at for a in latest if a.status == "failed" and a.retry_at is not None]
    if sent:
        suggestion.delivery_status, suggestion.delivered_at = "delivered", min(sent)
        if suggestion.status == "new":
            suggestion.status = "delivered"
    elif latest and not retries:
        suggestion.delivery_status = "failed"
    if retries and suggestion.status in PUSHABLE and not rerun:  # a rerun's first run scheduled it
        _schedule_retry(uow, suggestion, min(retries))
    return True, suggestion.delivery_status


def _finish_and_settle(database: Database, claims: Sequence[Claim], results: Sequence[PushResult],
                       to_settle: Sequence[uuid.UUID], groups: dict[uuid.UUID, list[int | None]],
                       now: datetime) -> dict[uuid.UUID, DeliveryReport]:
    """One transaction: every try's outcome, then each suggestion's delivery status, retries and outbox."""
    reports: dict[uuid.UUID, DeliveryReport] = {}
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        suggestions = load_locked(session, list(to_settle))  # locks the users before anything is written
        retrying = _finish(session, claims, results, now, database.settings)
        session.flush()
        tries = round_tries(session, suggestions.values())
        outbox_ids = sorted({i for sid in to_settle for i in groups[sid] if i is not None})
        completed: set[int] = set()
        for chunk in chunks(outbox_ids):  # by id alone, filtered here: the primary key, whatever the estimates
            completed.update(i for i, at in session.execute(select(OutboxMessage.id, OutboxMessage.completed_at)
                                                            .where(among(session, OutboxMessage.id, chunk)))
                             if at is not None)
        sent, failed = defaultdict(int), defaultdict(int)
        for claim, result in zip(claims, results):
            (sent if result.ok else failed)[claim.message.suggestion_id] += 1
        done: list[int | None] = []
        for suggestion_id in to_settle:
            suggestion = suggestions.get(suggestion_id)
            status = None
            if suggestion is not None:
                own = groups[suggestion_id]
                rerun = bool(own) and all(i is not None and i in completed for i in own)
                settled, status = _settle_one(uow, suggestion, tries[suggestion_id], rerun, now)
                if settled:
                    done.extend(own)
            reports[suggestion_id] = DeliveryReport(sent=sent[suggestion_id], failed=failed[suggestion_id],
                                                    delivery_status=status, retrying=retrying[suggestion_id])
        write_changes(session, Suggestion.__table__, suggestions.values())
        outbox.complete_many(session, done)
        uow.commit()
    return reports


def deliver_suggestions(source: Any, items: Sequence[Item], *, now: datetime | None = None,
                        choose: ProviderChooser = provider_for) -> dict[uuid.UUID, DeliveryReport]:
    """Push a batch of suggestions: ``items`` are (suggestion id, outbox message id or None) pairs.

    ``source`` is the container or the database. One claim transaction,
    the sends (concurrent where the provider can), one finish-and-settle
    transaction. Idempotent: running the same batch again sends nothing
    more. A suggestion listed twice (two messages) is pushed once and both
    messages are completed. Returns a report per suggestion.
    """
    database: Database = getattr(source, "database", source)
    clock = (lambda: now) if now is not None else utcnow
    groups: dict[uuid.UUID, list[int | None]] = {}
    for suggestion_id, outbox_id in items:
        groups.setdefault(suggestion_id, []).append(outbox_id)
    if not groups:
        return {}
    claims, to_settle, reports = _claim(database, groups, clock(), choose)
    if to_settle:
        results = send_claims(claims)
        reports.update(_finish_and_settle(database, claims, results, to_settle, groups, clock()))
    sent = sum(r.sent for r in reports.values())
    failed = sum(r.failed for r in reports.values())
    log.info("suggestions pushed", extra={"suggestions": len(groups), "sent": sent, "failed": failed,
                                          "retrying": sum(r.retrying for r in reports.values())})
    return reports
