"""Claiming a webhook batch (:mod:`.webhook_batch`): what may be sent now, each with its attempt, in one transaction.

The rules are :mod:`.webhook_delivery`'s step 1: a delivery settled, being
sent, not due or behind an earlier one of its subject is skipped; one whose
endpoint is disabled fails, one whose user withdrew ``partner_sharing`` is
cancelled; one whose endpoint has no free slot waits. The others get an
attempt (and, on a first attempt, a sharing ledger entry) and one claim id:
the batch is one slot of its endpoint.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Sequence
from urllib.parse import urlsplit

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session, aliased, defer

from ..db import Database
from ..ids import new_id
from ..models import SharingLedgerEntry, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from .consents import consenting_users
from .bulk import among, chunks, insert_rows, update_rows
from .outbox import complete_many
from .sharing import owner_name
from .webhook_delivery import STALE_SEND, body_bytes, in_flight, release_next, set_waiting, settle
from .webhook_events import CONSENT_WITHDRAWN, PARTNER_SHARING, field_paths
from .webhook_secrets import active_secrets

Item = tuple[uuid.UUID, "int | None"]


@dataclass(frozen=True)
class Claim:
    """One delivery claimed for sending: where to, the exact body and the secrets to sign it with."""

    delivery_id: uuid.UUID
    attempt_id: uuid.UUID
    webhook_id: uuid.UUID
    url: str
    body: bytes
    secrets: list[str]


def lock_deliveries(session: Session, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, WebhookDelivery]:
    """The deliveries, read fresh and locked in id order, without their bodies (read in bulk where needed)."""
    out: dict[uuid.UUID, WebhookDelivery] = {}
    for chunk in chunks(sorted(ids)):
        query = (select(WebhookDelivery).where(among(session, WebhookDelivery.id, chunk))
                 .options(defer(WebhookDelivery.payload)).order_by(WebhookDelivery.id))
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
    """The sharing ledger rows of first attempts (recipient: the partner's name and the endpoint's host); the
    name read once per endpoint."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.names: dict[uuid.UUID, str] = {}

    def row(self, endpoint: WebhookEndpoint, delivery: WebhookDelivery, payload: dict[str, Any],
            now: datetime, attempt_id: uuid.UUID) -> dict[str, Any]:
        """The entry of ``delivery``'s first attempt. It has the attempt's id: a batch that does not send the
        delivery deletes both by primary key (:func:`.webhook_outcomes.finish`)."""
        if endpoint.id not in self.names:
            host = urlsplit(endpoint.url).hostname or endpoint.url
            self.names[endpoint.id] = f"{owner_name(self.session, endpoint.owner)} ({host})"
        return {"id": attempt_id, "user_id": delivery.user_id, "at": now, "channel": "webhook",
                "recipient": self.names[endpoint.id][:300], "recipient_id": str(endpoint.id),
                "recipient_owner": endpoint.owner, "event_type": delivery.event_type,
                "fields": field_paths(payload.get("data")), "reference_id": str(delivery.id)}


def _payloads(session: Session, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
    """The bodies of the claimed deliveries (locked already), read in bulk."""
    out: dict[uuid.UUID, dict[str, Any]] = {}
    for chunk in chunks(sorted(ids)):
        out.update(session.execute(select(WebhookDelivery.id, WebhookDelivery.payload)
                                   .where(among(session, WebhookDelivery.id, chunk))).all())
    return out


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
        # Without their bodies: a batch to a busy endpoint (a backlog meets its slots all taken) sends nothing,
        # and the claimed ones' bodies are read afterwards in one statement.
        deliveries = lock_deliveries(session, list(outbox_ids))
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
        waiting: list[uuid.UUID] = []
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
                if delivery.waiting_since is None:
                    waiting.append(delivery.id)
            else:
                chosen.append(delivery)
                if delivery.webhook_id in probing:
                    probed.add(delivery.webhook_id)
        set_waiting(session, waiting, now)
        claims = _claim_chosen(session, chosen, endpoints, now, settings)
        for webhook_id, subjects in released.items():
            release_next(uow, webhook_id, subjects, now)
        # A claimed delivery's messages are finished with its send (a worker dying mid-send leaves them open).
        left_open.update(d.id for d in chosen)
        complete_many(session, [o for d, ids in outbox_ids.items() if d not in left_open for o in ids])
        uow.commit()
    return claims, statuses


def _claim_chosen(session: Session, chosen: list[WebhookDelivery], endpoints: dict[uuid.UUID, WebhookEndpoint],
                  now: datetime, settings: Any) -> list[Claim]:
    """Record an attempt for each chosen delivery (one claim id: one slot); the claims.

    Three bulk statements (deliveries, attempts, ledger; :mod:`.bulk`) instead of the ORM's
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
    payloads = _payloads(session, [d.id for d in chosen])
    ledger = _Ledger(session)
    secrets = {w: active_secrets(settings, e, now) for w, e in endpoints.items() if e.enabled}
    claims, numbers, attempts, shared = [], [], [], []
    for delivery in chosen:
        endpoint = endpoints[delivery.webhook_id]
        payload = payloads[delivery.id]
        number = delivery.attempts + 1
        attempt_id = new_id()
        if delivery.user_id is not None and delivery.attempts == 0:
            shared.append(ledger.row(endpoint, delivery, payload, now, attempt_id))
        numbers.append({"id": delivery.id, "attempts": number})
        attempts.append({"id": attempt_id, "delivery_id": delivery.id, "number": number, "status": "sending",
                         "started_at": now})
        claims.append(Claim(delivery.id, attempt_id, endpoint.id, endpoint.url, body_bytes(payload),
                            secrets[endpoint.id]))
    update_rows(session, WebhookDelivery.__table__, "id", numbers,
                {"waiting_since": None, "sending_since": now, "updated_at": now, "claim_id": claim_id})
    insert_rows(session, WebhookAttempt.__table__, attempts)
    insert_rows(session, SharingLedgerEntry.__table__, shared)
    return claims
