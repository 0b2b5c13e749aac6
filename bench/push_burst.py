"""Benchmark 6's burst: users, FCM devices and due suggestions stored in bulk, and what delivery left."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

# --------------------------------------------------------------------------- the burst: users, devices, suggestions


def store_burst(database: Any, users: int, devices_per_user: int, tag: str) -> list[tuple[Any, int]]:
    """``users`` users (consent given, FCM devices) with one suggestion each, due now, and its outbox message.

    Rows as the API and the engine leave them (``propose`` made the suggestion
    ``new``/``pending`` with ``pushed_at`` and the relay published the message),
    written in bulk: the set-up is not what is measured. Returns
    (suggestion id, outbox message id) per user.
    """
    from sqlalchemy import insert, select

    from smartsvc.ids import new_id
    from smartsvc.models import Consent, Device, OutboxMessage, Suggestion, User
    from smartsvc.services.suggestions import PUSH_TASK
    from smartsvc.timeutil import utcnow

    now = utcnow()
    user_rows, consent_rows, device_rows, suggestion_rows, outbox_rows = [], [], [], [], []
    for u in range(users):
        user_id, suggestion_id = new_id(), new_id()
        user_rows.append({"id": user_id, "external_id": f"{tag}-user-{u}", "time_zone": "Europe/Berlin",
                          "max_pushes_per_day": 50, "token_generation": 0, "created_at": now, "updated_at": now})
        consent_rows.append({"user_id": user_id, "purpose": "proactive_push", "granted": True, "changed_at": now})
        for d in range(devices_per_user):
            token = f"{tag}{u}.{d}:APA91b" + secrets.token_urlsafe(105)  # FCM tokens are ~160 characters
            device_rows.append({"id": new_id(), "user_id": user_id, "platform": "fcm", "token": token,
                                "subscription": None, "token_hash": hashlib.sha256(token.encode()).hexdigest(),
                                "active": True, "created_at": now, "last_seen_at": now})
        title = "3 spots that fit your car"
        body = f"120 m from your destination, free until 18:00 — Torstraße {u % 200 + 1}"
        suggestion_rows.append({
            "id": suggestion_id, "user_id": user_id, "rule_id": None, "trigger_id": new_id(),
            "kind": "spots_near_destination", "title": title, "body": body,
            "payload": {"spots": [{"id": str(new_id()), "distance_m": 120 + s} for s in range(3)]},
            "reason": {"rule": {"id": None, "name": "small spots before arrival"},
                       "trigger": {"event": "trip.approaching", "at": now.isoformat(), "fields": {}}, "facts": {}},
            "collapse_key": f"spots:{tag}-{u}", "content_hash": hashlib.sha256(f"{title}{body}".encode()).hexdigest(),
            "status": "new", "status_reason": None, "created_at": now, "expires_at": now + timedelta(minutes=30),
            "deliver_after": None, "snoozed_until": None, "delivery_status": "pending", "delivered_at": None,
            "dedupe_key": f"{tag}-{u}", "pushed_at": now, "push_round": 0})
        outbox_rows.append({"task": PUSH_TASK, "payload": {"suggestion_id": str(suggestion_id)},
                            "ordering_key": f"user:{user_id}", "user_id": user_id, "created_at": now,
                            "available_at": now, "sent_at": now, "attempts": 1})
    with database.unit_of_work() as uow:
        session = uow.session
        for model, rows in ((User, user_rows), (Consent, consent_rows), (Device, device_rows),
                            (Suggestion, suggestion_rows), (OutboxMessage, outbox_rows)):
            for lo in range(0, len(rows), 2000):
                session.execute(insert(model), rows[lo:lo + 2000])
        uow.commit()
    ids: dict[str, int] = {}
    with database.session() as session:
        for lo in range(0, len(user_rows), 5000):
            ids.update((payload["suggestion_id"], oid) for oid, payload in session.execute(
                select(OutboxMessage.id, OutboxMessage.payload).where(
                    OutboxMessage.user_id.in_([r["id"] for r in user_rows[lo:lo + 5000]]))))
    return [(row["id"], ids[str(row["id"])]) for row in suggestion_rows]


def check_burst(database: Any, burst: list[tuple[Any, int]]) -> dict[str, int]:
    """What the burst left in the database: attempts by status, suggestions delivered, messages completed."""
    from sqlalchemy import func, select

    from smartsvc.models import OutboxMessage, PushAttempt, Suggestion

    suggestion_ids = [s for s, _ in burst]
    outbox_ids = [o for _, o in burst]
    counts: dict[str, int] = {"attempts_sent": 0, "attempts_failed": 0, "attempts_sending": 0}
    with database.session() as session:
        for lo in range(0, len(burst), 5000):
            chunk = suggestion_ids[lo:lo + 5000]
            for status, n in session.execute(select(PushAttempt.status, func.count()).where(
                    PushAttempt.suggestion_id.in_(chunk)).group_by(PushAttempt.status)):
                counts[f"attempts_{status}"] = counts.get(f"attempts_{status}", 0) + n
            counts["suggestions_delivered"] = counts.get("suggestions_delivered", 0) + session.scalar(
                select(func.count()).select_from(Suggestion).where(
                    Suggestion.id.in_(chunk), Suggestion.delivery_status == "delivered",
                    Suggestion.status == "delivered"))
            counts["outbox_completed"] = counts.get("outbox_completed", 0) + session.scalar(
                select(func.count()).select_from(OutboxMessage).where(
                    OutboxMessage.id.in_(outbox_ids[lo:lo + 5000]), OutboxMessage.completed_at.is_not(None)))
    return counts
