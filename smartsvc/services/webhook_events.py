"""Emit partner webhook events: one delivery per subscribed endpoint, in the caller's transaction.

:func:`emit_event` is called where something happens (a suggestion stored,
feedback given, a dataset published, a geofence or trip trigger written).
It writes a :class:`~smartsvc.models.WebhookDelivery` per enabled endpoint
subscribed to the event type, each with its body ``{"type", "timestamp",
"data"}`` (coordinates rounded to the endpoint's ``coordinate_decimals``),
and an outbox message per delivery (the transactional outbox: the send
happens only if the caller commits). Events about a user (``user_id``) go
out only while the user grants ``partner_sharing``.
"""

from __future__ import annotations

import json
import math
import uuid
from datetime import datetime, timedelta
from typing import Any, Mapping, Sequence

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from ..db import UnitOfWork
from ..ids import new_id
from ..models import Consent, WebhookDelivery, WebhookEndpoint
from ..timeutil import utcnow
from . import outbox
from .bulk import insert_rows
from .consents import CONSENT_GRANTED, consenting_users, has_consent

# DELIVERY.md "Partner webhooks": the event types an endpoint can subscribe to.
EVENT_TYPES = (
    "suggestion.created", "suggestion.feedback", "help.requested", "help.updated",
    "geofence.entered", "geofence.exited", "geofence.dwelled", "trip.approaching",
    "dataset.published", "webhook.test",
)
# The trigger events (smartsvc.services.triggers) that are also webhook events.
TRIGGER_EVENTS = ("geofence.entered", "geofence.exited", "geofence.dwelled", "trip.approaching")
# The Celery task sending one delivery (workers/tasks/webhooks.py), on its own queue.
DELIVER_TASK = "smartsvc.webhooks.deliver"
WEBHOOK_QUEUE = "webhooks"
PARTNER_SHARING = "partner_sharing"
CONSENT_WITHDRAWN = "partner_sharing consent withdrawn"
# Keys whose number is a coordinate, and keys under which every number is one (GeoJSON, bounding boxes).
COORDINATE_KEYS = frozenset({"lat", "lon", "lng", "latitude", "longitude"})
COORDINATE_CONTAINERS = frozenset({"coordinates", "bbox", "center", "position", "location"})
MAX_FIELD_PATHS = 200
# session.info keys of the enabled endpoints, and of whether each has deliveries waiting for a slot: read once
# per transaction.
_ENDPOINTS_KEY = "smartsvc.webhook_endpoints"
_BUSY_KEY = "smartsvc.webhook_endpoints_busy"


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def as_json(value: Any) -> Any:
    """``value`` as plain JSON (datetimes and UUIDs as strings)."""
    return json.loads(json.dumps(value, default=_json_default))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def coarsen(value: Any, decimals: int, *, inside: bool = False) -> Any:
    """``value`` with every coordinate rounded to ``decimals`` (TRUST.md: data for partners can be coarser).

    A coordinate is a number under a key such as ``lat``/``lon``, or any
    number inside ``coordinates``/``bbox``/``center``/``position``/``location``.
    """
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            if key in COORDINATE_KEYS and _is_number(item):
                result[key] = round(float(item), decimals)
            else:
                result[key] = coarsen(item, decimals, inside=inside or key in COORDINATE_CONTAINERS)
        return result
    if isinstance(value, list):
        return [coarsen(item, decimals, inside=inside) for item in value]
    if inside and _is_number(value):
        return round(float(value), decimals)
    return value


def field_paths(value: Any, prefix: str = "") -> list[str]:
    """The dotted paths of the leaves of ``value`` (``payload.spots[].lat``), sorted: what the ledger lists."""
    paths: set[str] = set()
    stack: list[tuple[Any, str]] = [(value, prefix)]
    while stack and len(paths) < MAX_FIELD_PATHS:
        item, path = stack.pop()
        if isinstance(item, dict) and item:
            stack.extend((child, f"{path}.{key}" if path else str(key)) for key, child in item.items())
        elif isinstance(item, list) and item:
            stack.extend((child, f"{path}[]") for child in item)
        elif path:
            paths.add(path)
    return sorted(paths)


# An endpoint whose last this many attempts failed gets no new tries until one succeeds (or the minute's probe).
BREAKER_FAILURES = 5


def breaker_open(endpoint: WebhookEndpoint) -> bool:
    """True when the endpoint's last :data:`BREAKER_FAILURES` attempts all failed."""
    return (endpoint.consecutive_failures or 0) >= BREAKER_FAILURES


def new_delivery(uow: UnitOfWork, endpoint: WebhookEndpoint, event_type: str, subject: str, data: Any, *,
                 user_id: uuid.UUID | None, now: datetime, probe: bool = False, busy: bool = False) -> WebhookDelivery:
    """Write one delivery for ``endpoint`` and the outbox message that sends it.

    To an endpoint whose breaker is open (:func:`breaker_open`) a new delivery
    is not queued but waits (``waiting_since``): its tries would only fail and
    take worker time from healthy endpoints. The endpoint's next success
    releases the waiting deliveries; so does the beat sweep (a probe a
    minute). So does one to a ``busy`` endpoint (:func:`busy_endpoints`):
    queued, it would only be claimed to be marked waiting. ``probe`` (the
    ``test`` event) is queued whatever the state.
    """
    session = uow.session
    assert session is not None
    # The id is given here, not by a flush: the rows of many events go out in one INSERT at commit.
    delivery = WebhookDelivery(**_delivery_row(endpoint, event_type, subject, data, user_id, now,
                                               waiting=not probe and (busy or breaker_open(endpoint))))
    session.add(delivery)
    if delivery.waiting_since is None:
        enqueue_delivery(uow, delivery, now)
    return delivery


def _delivery_row(endpoint: WebhookEndpoint, event_type: str, subject: str, data: Any, user_id: uuid.UUID | None,
                  now: datetime, *, waiting: bool) -> dict[str, Any]:
    """The columns of a new delivery: its body ``{"type", "timestamp", "data"}``, coarsened for the endpoint."""
    body = {"type": event_type, "timestamp": now.isoformat().replace("+00:00", "Z"),
            "data": coarsen(data, endpoint.coordinate_decimals)}
    return {"id": new_id(), "webhook_id": endpoint.id, "event_type": event_type, "subject": subject[:200],
            "user_id": user_id, "payload": body, "status": "pending", "attempts": 0, "next_attempt_at": now,
            "created_at": now, "updated_at": now, "waiting_since": now if waiting else None}


def enqueue_delivery(uow: UnitOfWork, delivery: WebhookDelivery, at: datetime) -> None:
    """Queue the sending of ``delivery`` for ``at`` (now or a retry's time)."""
    message = outbox.enqueue(uow, DELIVER_TASK, {"delivery_id": str(delivery.id)},
                             ordering_key=f"webhook:{delivery.webhook_id}", user_id=delivery.user_id)
    message.available_at = at


def enqueue_deliveries(uow: UnitOfWork, webhook_id: uuid.UUID,
                       deliveries: Sequence[tuple[uuid.UUID, uuid.UUID | None, datetime]]) -> None:
    """Queue the sending of many deliveries of one endpoint, each ``(id, user id, at)``, in one statement (as
    :func:`enqueue_delivery`)."""
    outbox.enqueue_rows(uow, DELIVER_TASK, [
        {"payload": {"delivery_id": str(delivery_id)}, "ordering_key": f"webhook:{webhook_id}", "user_id": user_id,
         "available_at": at} for delivery_id, user_id, at in deliveries])


def _enabled_endpoints(session: Session) -> list[WebhookEndpoint]:
    """The enabled endpoints, read once per transaction (a transaction emitting many events asks once)."""
    cached = session.info.get(_ENDPOINTS_KEY)
    if cached is None:
        cached = session.info[_ENDPOINTS_KEY] = list(session.scalars(
            select(WebhookEndpoint).where(WebhookEndpoint.enabled.is_(True)).order_by(WebhookEndpoint.id)))
    return cached


# An endpoint with a delivery waiting for a slot this long is busy (a slot of a healthy one frees in far less). At
# 1 s a hanging endpoint had 2,600 deliveries queued to it, each claimed only to wait (BENCHMARKS.md, 7).
BUSY_AFTER = timedelta(seconds=0.25)


def _long_waiting() -> Any:
    """The statuses of the deliveries that began waiting last among those waiting since ``before``.

    Built once (asked once per transaction that emits, for each endpoint subscribed), in a shape PostgreSQL
    answers from the (webhook_id, waiting_since) index whatever its estimates: a ``max()`` it reads from the
    index's end, then the rows of that time. Given "status = 'pending'" in the WHERE, it took the index of
    the endpoint's pending deliveries and read all of them (10 ms a transaction behind 20,000). The status
    is looked at by the caller: a delivery settled while it waited keeps its ``waiting_since``.
    """
    latest = (select(func.max(WebhookDelivery.waiting_since))
              .where(WebhookDelivery.webhook_id == bindparam("webhook_id"),
                     WebhookDelivery.waiting_since < bindparam("before"))
              .scalar_subquery())
    return (select(WebhookDelivery.status)
            .where(WebhookDelivery.webhook_id == bindparam("webhook_id"), WebhookDelivery.waiting_since == latest)
            .limit(20))


_LONG_WAITING = _long_waiting()


# An endpoint whose every attempt failed for this long is failing. A healthy endpoint's hiccup is over sooner: the
# batches in flight to it succeed within milliseconds. At 1 s a refusing endpoint had 2,000 deliveries queued to it
# first, each claimed only to wait behind a probe (BENCHMARKS.md, 7).
FAILING_AFTER = BUSY_AFTER


def failing_long(endpoint: WebhookEndpoint, now: datetime) -> bool:
    """True when every attempt to the endpoint for :data:`FAILING_AFTER` or more failed (none succeeded since)."""
    return (bool(endpoint.consecutive_failures) and endpoint.failing_since is not None
            and endpoint.failing_since <= now - FAILING_AFTER)


def busy_endpoints(session: Session, endpoints: Sequence[WebhookEndpoint], now: datetime) -> set[uuid.UUID]:
    """Those of ``endpoints`` with a delivery waiting for a free slot for :data:`BUSY_AFTER` or more (its slots
    are all taken and stay so: a slow or hanging endpoint), asked once per transaction.

    A new delivery to such an endpoint waits too instead of being queued: a batch would only claim it to mark
    it waiting, and at 2,000 events a second a hanging endpoint's share of that work slowed the deliveries to
    a healthy endpoint to 0.70 of its rate (BENCHMARKS.md §7). The waiting deliveries are released in order, a batch
    per slot that frees (``release_waiting``), and by the beat's sweep if none frees. A healthy endpoint
    whose slots are full for a moment is not busy: its deliveries are queued as before.

    So is one whose every attempt has failed for :data:`FAILING_AFTER` or more (:func:`failing_long`), before
    its breaker opens: a refusing endpoint failed its fifth attempt only after 2.5 s at 2,000 events/s, and
    the 5,000 deliveries queued to it meanwhile were each claimed to wait behind a probe (BENCHMARKS.md, 7).
    """
    known: dict[uuid.UUID, bool] = session.info.setdefault(_BUSY_KEY, {})
    for endpoint in endpoints:
        if endpoint.id not in known:
            known[endpoint.id] = failing_long(endpoint, now) or "pending" in session.connection().execute(
                _LONG_WAITING, {"webhook_id": endpoint.id, "before": now - BUSY_AFTER}).scalars()
    return {endpoint.id for endpoint in endpoints if known[endpoint.id]}


def _subscribed(session: Session, type: str) -> list[WebhookEndpoint]:
    """The enabled endpoints subscribed to ``type``; ValueError for a type that is not a webhook event."""
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {type!r}")
    return [endpoint for endpoint in _enabled_endpoints(session) if type in (endpoint.event_types or [])]


def _sharing_granted(session: Session, user_id: uuid.UUID) -> bool:
    """``partner_sharing`` granted now. The deliveries this transaction has written but not flushed yet
    cannot change the answer, so they are not flushed for it (unless a consent itself is pending)."""
    if any(isinstance(obj, Consent) for obj in session.new) or any(isinstance(obj, Consent) for obj in session.dirty):
        return has_consent(session, user_id, PARTNER_SHARING)
    # On the connection, as nothing needs flushing: the ORM's execution of a one-value query cost more CPU
    # than the query (an event asks once per user).
    return bool(session.connection().execute(CONSENT_GRANTED, {"user_id": user_id, "purpose": PARTNER_SHARING})
                .scalar())


def emit_event(uow: UnitOfWork, type: str, subject: str, data: Mapping[str, Any], *,
               user_id: uuid.UUID | None = None, now: datetime | None = None) -> int:
    """Fan ``type`` out to every enabled endpoint subscribed to it; how many deliveries were written.

    ``subject`` names what the event is about (``"user:<id>"``,
    ``"dataset:<id>"``): deliveries to one endpoint about one subject are
    sent in order. With ``user_id`` the data is personal: nothing is written
    unless the user grants ``partner_sharing`` (each delivery then writes
    the user's sharing ledger when it is sent).
    """
    session = uow.session
    assert session is not None
    endpoints = _subscribed(session, type)
    if not endpoints:
        return 0
    if user_id is not None and not _sharing_granted(session, user_id):
        return 0
    now = now or utcnow()
    payload = as_json(dict(data))
    busy = busy_endpoints(session, endpoints, now)
    for endpoint in endpoints:
        new_delivery(uow, endpoint, type, subject, payload, user_id=user_id, now=now, busy=endpoint.id in busy)
    return len(endpoints)


def emit_events(uow: UnitOfWork, type: str, events: Sequence[tuple[str, Mapping[str, Any], uuid.UUID | None]], *,
                now: datetime | None = None) -> int:
    """:func:`emit_event` for many events of ``type``, each ``(subject, data, user_id)``, in their order; how many
    deliveries were written.

    One consent query for all their users, and the deliveries and their outbox messages written in a
    statement each, without ORM objects: for a source of many events at once (benchmark 7's producer:
    0.41 ms of CPU an event one by one, BENCHMARKS.md §7). What the transaction wrote before is flushed
    first, so its outbox messages keep their place in the commit order and its consents count.
    """
    session = uow.session
    assert session is not None
    endpoints = _subscribed(session, type)
    if not endpoints or not events:
        return 0
    session.flush()
    granted = consenting_users(session, {user_id for _s, _d, user_id in events if user_id is not None},
                               PARTNER_SHARING)
    now = now or utcnow()
    busy = busy_endpoints(session, endpoints, now)
    rows: list[dict[str, Any]] = []
    queued: dict[uuid.UUID, list[tuple[uuid.UUID, uuid.UUID | None, datetime]]] = {}
    for subject, data, user_id in events:
        if user_id is not None and user_id not in granted:
            continue
        payload = as_json(dict(data))
        for endpoint in endpoints:
            row = _delivery_row(endpoint, type, subject, payload, user_id, now,
                                waiting=endpoint.id in busy or breaker_open(endpoint))
            rows.append(row)
            if row["waiting_since"] is None:
                queued.setdefault(endpoint.id, []).append((row["id"], user_id, now))
    insert_rows(session, WebhookDelivery.__table__, rows)
    for webhook_id, deliveries in queued.items():
        enqueue_deliveries(uow, webhook_id, deliveries)
    return len(rows)


def emit_trigger_event(uow: UnitOfWork, *, user_id: uuid.UUID, event: str, at: datetime,
                       fields: Mapping[str, Any] | None, product_id: uuid.UUID | None) -> int:
    """The webhook event of a trigger that is one (:data:`TRIGGER_EVENTS`); others are ignored."""
    if event not in TRIGGER_EVENTS:
        return 0
    data: dict[str, Any] = {"user_id": user_id, "at": at, **dict(fields or {})}
    if product_id is not None:
        data["product_id"] = product_id
    return emit_event(uow, event, f"user:{user_id}", data, user_id=user_id)


def cancel_user_deliveries(uow: UnitOfWork, user_id: uuid.UUID, reason: str = CONSENT_WITHDRAWN) -> int:
    """Cancel the user's deliveries not sent yet (consent withdrawn, user erased); how many."""
    session = uow.session
    assert session is not None
    result = session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.user_id == user_id, WebhookDelivery.status == "pending")
        .values(status="cancelled", status_reason=reason, next_attempt_at=None, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def suggestion_event(suggestion: Any) -> dict[str, Any]:
    """The data of ``suggestion.created``: the suggestion as the user sees it."""
    return {"id": suggestion.id, "user_id": suggestion.user_id, "kind": suggestion.kind, "rule_id": suggestion.rule_id,
            "title": suggestion.title, "body": suggestion.body, "payload": suggestion.payload,
            "status": suggestion.status, "created_at": suggestion.created_at, "expires_at": suggestion.expires_at}


def feedback_event(suggestion: Any, action: str, previous: str, at: datetime) -> dict[str, Any]:
    """The data of ``suggestion.feedback``: what the user did and what became of the suggestion."""
    return {"suggestion_id": suggestion.id, "user_id": suggestion.user_id, "kind": suggestion.kind,
            "rule_id": suggestion.rule_id, "action": action, "from": previous, "to": suggestion.status,
            "snoozed_until": suggestion.snoozed_until, "at": at}


def dataset_event(dataset: Any, version: int | None) -> dict[str, Any]:
    """The data of ``dataset.published``: which dataset is now live for its layer, and its extent."""
    bbox = None
    if dataset.bbox_min_lon is not None:
        bbox = [dataset.bbox_min_lon, dataset.bbox_min_lat, dataset.bbox_max_lon, dataset.bbox_max_lat]
    return {"id": dataset.id, "name": dataset.name, "layer": dataset.layer, "version": version,
            "spots": dataset.spots, "bbox": bbox, "published_at": dataset.published_at}
