"""Webhook delivery: the rules every send follows, and :func:`deliver_webhook` (a batch of one).

Deliveries go out in batches per endpoint (:mod:`.webhook_batch`: one claim
transaction, the sends one after another over one kept-alive connection, one
finish transaction), so that a task run twice sends once:

1. claim (committed before the send): skip a delivery that is settled,
   being sent by another worker, not due yet, or behind an earlier pending
   delivery of the same endpoint and subject (ordering: that one releases it
   when it settles); cancel it when the user withdrew ``partner_sharing``;
   wait when the endpoint already has ``SMARTSVC_WEBHOOK_MAX_IN_FLIGHT``
   batches in flight (isolation: a slow or dead endpoint holds that many
   worker slots at most; each batch that finishes well releases the earliest
   waiting deliveries, one that fails only the earliest, as a probe);
   otherwise record the attempt (and, on the first one,
   the sharing ledger);
2. send, signed with the endpoint's secrets (both during a rotation), with
   the same ``webhook-id`` on every attempt; a batch stops sending to an
   endpoint that failed to answer (network error, timeout, 429, 5xx, 410) or
   after its time budget, and its unsent deliveries wait for a slot again;
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
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Sequence

from sqlalchemy import Text, bindparam, func, select, true, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from ..config import Settings
from ..db import Database, UnitOfWork
from ..models import WebhookDelivery, WebhookEndpoint, WebhookNotice
from ..timeutil import utcnow
from .bulk import among, chunks, update_rows
from .webhook_events import enqueue_deliveries

log = logging.getLogger(__name__)

# A claim older than this is from a worker that died mid-send (the send itself is bounded by the timeout).
STALE_SEND = timedelta(minutes=2)
# A delivery waiting for a slot this long with nothing in flight to its endpoint missed its release.
STRANDED_AFTER = timedelta(minutes=1)
JITTER = 0.1
MAX_RETRY_AFTER_S = 86400
Sender = Callable[..., Any]


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


def _earliest_pending(postgresql: bool) -> Any:
    """Each subject's earliest pending delivery to one endpoint (``webhook_id``; the subjects are ``subjects``).

    On PostgreSQL one look-up per subject: unnested, each joined to a LATERAL ``ORDER BY id LIMIT 1`` that
    the ``(webhook_id, subject, status)`` index answers. A window over ``subject = ANY(...)`` with
    ``sending_since IS NULL`` was answered from the ``(webhook_id, sending_since)`` index instead: it read
    every row of the endpoint not being sent, its whole history, on every settle (12 ms a batch with 40,000
    rows; BENCHMARKS.md, 7). Elsewhere (SQLite) a window over ``subject IN (...)``. A subject's earliest
    pending delivery may be one being sent: the caller skips it.
    """
    table = WebhookDelivery.__table__
    columns = (table.c.id, table.c.user_id, table.c.next_attempt_at, table.c.sending_since)
    if postgresql:
        keys = func.unnest(bindparam("subjects", type_=ARRAY(Text()))).table_valued("key").render_derived(
            name="keys")
        found = (select(*columns).where(table.c.webhook_id == bindparam("webhook_id"), table.c.subject == keys.c.key,
                                        table.c.status == "pending")
                 .order_by(table.c.id).limit(1).lateral("found"))
        return select(*found.c).select_from(keys).join(found, true()).order_by(found.c.id)
    ranked = (select(table.c.id, func.row_number().over(partition_by=table.c.subject, order_by=table.c.id)
                     .label("rank"))
              .where(table.c.webhook_id == bindparam("webhook_id"),
                     table.c.subject.in_(bindparam("subjects", expanding=True)), table.c.status == "pending")
              .subquery())
    return (select(*columns).join(ranked, ranked.c.id == table.c.id).where(ranked.c.rank == 1)
            .order_by(table.c.id))


_EARLIEST_PENDING = {dialect: _earliest_pending(dialect) for dialect in (True, False)}


def release_next(uow: UnitOfWork, webhook_id: uuid.UUID, subjects: Iterable[str], now: datetime) -> None:
    """Queue the earliest pending delivery of this endpoint for each subject (it waited for the one settled);
    none for a subject whose earliest is being sent (its own finish releases the next)."""
    session = uow.session
    assert session is not None
    wanted = sorted(set(subjects))
    if not wanted:
        return
    statement = _EARLIEST_PENDING[session.get_bind().dialect.name == "postgresql"]
    for part in chunks(wanted):
        # Only each subject's earliest is read: behind an endpoint that was down, a subject can have
        # thousands pending, and loading them all (payloads included) on every settle made a backlog
        # cost more the deeper it was (BENCHMARKS.md, 7).
        rows = session.execute(statement, {"webhook_id": webhook_id, "subjects": list(part)})
        following = [(delivery_id, user_id, max(now, next_at or now))
                     for delivery_id, user_id, next_at, sending_since in rows if sending_since is None]
        # Rows, not ORM objects: a batch settles 200 at once (BENCHMARKS.md, 7).
        update_rows(session, WebhookDelivery.__table__, "id",
                    [{"id": delivery_id, "next_attempt_at": due} for delivery_id, _user, due in following])
        _loaded_now(session, {delivery_id: {"next_attempt_at": due} for delivery_id, _user, due in following})
        enqueue_deliveries(uow, webhook_id, following)


def _loaded_now(session: Session, written: dict[uuid.UUID, dict[str, Any]]) -> None:
    """Deliveries this session has loaded already get the values just written to their rows by a bulk statement
    (the session was flushed before it: nothing of theirs is pending)."""
    for delivery_id, values in written.items():
        loaded = session.identity_map.get(identity_key(WebhookDelivery, delivery_id))
        if loaded is not None:
            for name, value in values.items():
                set_committed_value(loaded, name, value)


def in_flight(session: Session, webhook_id: uuid.UUID, now: datetime) -> int:
    """Batches sending to this endpoint now: its worker slots in use (a claim older than :data:`STALE_SEND`
    is a dead worker's)."""
    return session.scalar(select(func.count(func.distinct(WebhookDelivery.claim_id))).where(
        WebhookDelivery.webhook_id == webhook_id, WebhookDelivery.sending_since > now - STALE_SEND)) or 0


def set_waiting(session: Session, ids: Sequence[uuid.UUID], since: datetime | None) -> None:
    """Deliveries start waiting for a slot of their endpoint (``since``), or stop (None): one statement a chunk,
    not one a row."""
    table = WebhookDelivery.__table__
    for chunk in chunks(sorted(ids)):
        session.execute(update(table).where(among(session, table.c.id, chunk)).values(waiting_since=since))


def release_waiting(uow: UnitOfWork, webhook_id: uuid.UUID, now: datetime, at_most: int | None = None) -> int:
    """Queue the endpoint's earliest deliveries waiting for a slot, a batch for each free slot (``at_most`` of
    them when given); how many."""
    session = uow.session
    assert session is not None
    settings = uow.database.settings
    free = settings.webhook_max_in_flight - in_flight(session, webhook_id, now)
    if free <= 0:
        return 0
    limit = free * settings.webhook_batch_size
    if at_most is not None:
        limit = min(limit, at_most)
    # SKIP LOCKED: two batches to one endpoint finish side by side (a finish does not lock it), and each
    # releases waiting deliveries the other has not taken.
    waiting = session.execute(
        select(WebhookDelivery.id, WebhookDelivery.user_id).where(WebhookDelivery.webhook_id == webhook_id,
                                                                  WebhookDelivery.waiting_since.is_not(None),
                                                                  WebhookDelivery.status == "pending")
        .order_by(WebhookDelivery.id).limit(limit)
        .with_for_update(skip_locked=True)).all()
    set_waiting(session, [delivery_id for delivery_id, _user in waiting], None)
    _loaded_now(session, {delivery_id: {"waiting_since": None} for delivery_id, _user in waiting})
    enqueue_deliveries(uow, webhook_id, [(delivery_id, user_id, now) for delivery_id, user_id in waiting])
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
            if in_flight(session, webhook_id, now) == 0:
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


def settle(delivery: WebhookDelivery, status: str, reason: str | None, now: datetime) -> None:
    """End ``delivery`` with ``status``; the caller releases the next of its subject (:func:`release_next`)."""
    delivery.status, delivery.status_reason = status, reason
    delivery.next_attempt_at, delivery.updated_at = None, now


def transport_options(settings: Settings) -> dict[str, Any]:
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
    from .webhook_batch import deliver_webhooks

    return deliver_webhooks(source, [(delivery_id, outbox_id)], now=now, sender=sender, rng=rng)[delivery_id]
