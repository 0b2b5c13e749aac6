"""Benchmark 7's side of the service's webhook pipeline, in this process, through its database.

The subscribed users and endpoints, the event producer (:func:`produce`), reading back what arrived
(:func:`measure`, :func:`db_state`, :func:`quiet`), the receiver's own ceiling (:func:`sink_ceiling`) and the
one-thread breakdown of where the time goes (:func:`stages`).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import datetime
from typing import Any

from bench.common import summarize
from bench.webhook_procs import Sink

EVENT = "suggestion.created"
OWNER = "bench-partner"


# --------------------------------------------------------------------------- set-up


def add_users(database: Any, count: int) -> list[uuid.UUID]:
    """``count`` users granting ``partner_sharing``, in one transaction (the rows ``set_consent`` writes)."""
    from smartsvc.models import Consent, ConsentEvent, User
    from smartsvc.timeutil import utcnow

    now = utcnow()
    with database.unit_of_work() as uow:
        session = uow.session
        users = [User(external_id=f"bench-user-{uuid.uuid4().hex}", time_zone="Europe/Berlin") for _ in range(count)]
        session.add_all(users)
        session.flush()
        for user in users:
            session.add(Consent(user_id=user.id, purpose="partner_sharing", granted=True, changed_at=now))
            session.add(ConsentEvent(user_id=user.id, purpose="partner_sharing", granted=True, at=now))
        uow.commit()
    return [user.id for user in users]


def add_endpoint(database: Any, url: str) -> tuple[uuid.UUID, str]:
    """A webhook subscribed to :data:`EVENT`, through the use case (URL checks included); (id, secret)."""
    from smartsvc.services.webhooks import create_webhook

    issued = create_webhook(database, OWNER, {"url": url, "event_types": [EVENT], "description": "benchmark"})
    return issued.view.endpoint.id, issued.secret


def disable_endpoints(database: Any) -> None:
    """Disable every endpoint (the next phase gets its own); what is pending for them fails."""
    from smartsvc.services.webhooks import update_webhook

    from smartsvc.models import WebhookEndpoint
    from sqlalchemy import select

    with database.session() as session:
        ids = list(session.scalars(select(WebhookEndpoint.id).where(WebhookEndpoint.enabled.is_(True))))
    for webhook_id in ids:
        update_webhook(database, OWNER, webhook_id, {"enabled": False})


# --------------------------------------------------------------------------- producer


def event_data(user_id: uuid.UUID, n: int, now: datetime) -> dict[str, Any]:
    """A ``suggestion.created`` body as :func:`smartsvc.services.webhook_events.suggestion_event` makes it."""
    return {"id": uuid.uuid4(), "user_id": user_id, "kind": "message", "rule_id": uuid.uuid4(),
            "title": "Parking near your destination", "body": f"3 free spots within 300 m (#{n})",
            "payload": {"spots": [{"id": f"spot-{n}-{k}", "lat": 52.52 + k * 1e-4, "lon": 13.405 + k * 1e-4}
                                  for k in range(3)]},
            "status": "new", "created_at": now, "expires_at": None}


def produce(database: Any, users: list[uuid.UUID], start: int, events: int, batch: int,
            rate: float | None, one_by_one: bool = False) -> dict[str, Any]:
    """Emit ``events`` events, ``batch`` per transaction, at ``rate`` events/s (None: as fast as possible).

    Each transaction's events go out with ``emit_events`` (one consent query, one statement for the
    deliveries and one for their outbox messages), as a source of many events would emit them: this
    process must offer 2,000 events/s on the cores the pipeline it measures runs on. ``one_by_one``: an
    ``emit_event`` call each instead (a use case emitting its one event), for the in-process stages.
    """
    from smartsvc.services.webhook_events import emit_event, emit_events
    from smartsvc.timeutil import utcnow

    clock = time.perf_counter
    began = clock()
    deliveries = 0
    lag_behind = 0.0
    for first in range(0, events, batch):
        if rate is not None:
            due = began + first / rate
            wait = due - clock()
            if wait > 0:
                time.sleep(wait)
            else:
                lag_behind = max(lag_behind, -wait)
        with database.unit_of_work() as uow:
            now = utcnow()
            about = [users[(start + n) % len(users)] for n in range(first, min(events, first + batch))]
            if one_by_one:
                for n, user_id in enumerate(about, start=start + first):
                    deliveries += emit_event(uow, EVENT, f"user:{user_id}", event_data(user_id, n, now),
                                             user_id=user_id)
            else:
                deliveries += emit_events(uow, EVENT, [(f"user:{user_id}", event_data(user_id, n, now), user_id)
                                                       for n, user_id in enumerate(about, start=start + first)])
            uow.commit()
    wall = clock() - began
    return {"events": events, "deliveries_written": deliveries, "wall_s": round(wall, 3),
            "events_per_s": round(events / wall, 1) if wall else None, "max_behind_schedule_s": round(lag_behind, 3)}


def sink_ceiling(sink: Sink, requests: int, threads: int) -> dict[str, Any]:
    """Requests/s the sink takes from keep-alive clients (threads of this process) with a webhook-sized body."""
    import http.client

    body = json.dumps({"type": EVENT, "timestamp": "2026-01-01T00:00:00Z",
                       "data": event_data(uuid.uuid4(), 0, datetime(2026, 1, 1))}, default=str).encode()
    headers = {"content-type": "application/json", "webhook-id": "msg_x", "webhook-timestamp": "0",
               "webhook-signature": "v1,x"}
    per = requests // threads

    def run() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", sink.port, timeout=30)
        for _ in range(per):
            conn.request("POST", "/ok/ceiling", body=body, headers=headers)
            conn.getresponse().read()
        conn.close()

    cpu = sink.cpu_s()
    t = time.perf_counter()
    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - t
    return {"requests": per * threads, "wall_s": round(wall, 3), "requests_per_s": round(per * threads / wall, 1),
            "sink_cpu_ms_per_request": round(1000 * (sink.cpu_s() - cpu) / (per * threads), 3)}


# --------------------------------------------------------------------------- what arrived


def _parse_ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def measure(records: list[dict[str, Any]], path: str, secret: str, verify_all: bool) -> dict[str, Any]:
    """Rate, latency and signature checks of the deliveries received on ``path``."""
    from standardwebhooks import Webhook

    mine = [r for r in records if r["path"] == path]
    if not mine:
        return {"received": 0, "unique": 0, "deliveries_per_s": 0.0, "latency": summarize([]),
                "signatures_checked": 0, "signatures_bad": 0}
    created = [_parse_ts(json.loads(r["body"])["timestamp"]) for r in mine]
    arrived = [r["at"] for r in mine]
    span = max(arrived) - min(created)
    verifier = Webhook(secret)
    sample = mine if verify_all else mine[:: max(1, len(mine) // 500)]
    bad = 0
    for r in sample:
        try:
            # The partner's check, timestamp tolerance included (5 min): run right after the phase.
            verifier.verify(r["body"], r["headers"])
        except Exception:
            bad += 1
    return {
        "received": len(mine),
        "unique": len({r["headers"]["webhook-id"] for r in mine}),
        "span_s": round(span, 3),
        "deliveries_per_s": round(len(mine) / span, 1) if span > 0 else None,
        "latency": summarize([a - c for a, c in zip(arrived, created)]),
        "signatures_checked": len(sample),
        "signatures_bad": bad,
    }


def db_state(database: Any, webhook_id: uuid.UUID) -> dict[str, int]:
    """Deliveries of one endpoint by status, and its attempts."""
    from sqlalchemy import func, select

    from smartsvc.models import WebhookAttempt, WebhookDelivery

    with database.session() as session:
        by_status = dict(session.execute(select(WebhookDelivery.status, func.count())
                                         .where(WebhookDelivery.webhook_id == webhook_id)
                                         .group_by(WebhookDelivery.status)).all())
        attempts = dict(session.execute(select(WebhookAttempt.status, func.count())
                                        .join(WebhookDelivery, WebhookDelivery.id == WebhookAttempt.delivery_id)
                                        .where(WebhookDelivery.webhook_id == webhook_id)
                                        .group_by(WebhookAttempt.status)).all())
    # attempts: tries that ended; sending: claimed by a batch still in flight (its unsent ones are given back).
    sending = int(attempts.pop("sending", 0))
    return {**{str(k): int(v) for k, v in by_status.items()}, "attempts": sum(int(v) for v in attempts.values()),
            "sending": sending}


def quiet(database: Any, timeout_s: float) -> None:
    """Wait (bounded) until the queue holds no delivery due now: the last phase's leftovers are not this one's load."""
    from sqlalchemy import func, select

    from smartsvc.models import OutboxMessage
    from smartsvc.services.webhook_events import DELIVER_TASK
    from smartsvc.timeutil import utcnow

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with database.session() as session:
            left = session.scalar(select(func.count()).select_from(OutboxMessage).where(
                OutboxMessage.task == DELIVER_TASK, OutboxMessage.completed_at.is_(None),
                OutboxMessage.available_at <= utcnow()))
        if not left:
            return
        time.sleep(0.2)


# --------------------------------------------------------------------------- where the time goes


def stages(database: Any, sink: Sink, users: list[uuid.UUID], start: int, count: int) -> dict[str, Any]:
    """One process, one thread, no broker: the CPU of emitting, and of delivering one by one or in batches.

    Run after the workers are stopped. Half the deliveries go one at a time
    (:func:`~smartsvc.services.webhook_delivery.deliver_webhook`: a claim, a
    client and a finish each), half in batches of ``SMARTSVC_WEBHOOK_BATCH_SIZE``
    (:func:`~smartsvc.services.webhook_batch.deliver_webhooks`, what the
    worker runs). SQL statements are counted on the engine.
    """
    from sqlalchemy import event, select

    from smartsvc.models import WebhookDelivery
    from smartsvc.services import webhook_batch, webhook_delivery
    from smartsvc.webhooks.transport import send_webhook

    disable_endpoints(database)
    notifier, database.outbox_notifier = database.outbox_notifier, None  # no relay: nothing consumes the queue
    statements = [0]

    def count_statement(*_args: Any) -> None:
        statements[0] += 1

    event.listen(database.engine, "before_cursor_execute", count_statement)
    try:
        webhook_id, _secret = add_endpoint(database, sink.url("/ok/stages"))
        emit = {}
        for mode, one_by_one, first in (("one_by_one", True, start), ("batched", False, start + count // 2)):
            cpu, before = time.process_time(), statements[0]
            produced = produce(database, users, first, count // 2, 100, None, one_by_one=one_by_one)
            emit[mode] = {"events": count // 2,
                          "cpu_ms_per_event": round(1000 * (time.process_time() - cpu) / (count // 2), 3),
                          "wall_ms_per_event": round(1000 * produced["wall_s"] / (count // 2), 3),
                          "statements_per_event": round((statements[0] - before) / (count // 2), 2)}
        with database.session() as session:
            ids = list(session.scalars(select(WebhookDelivery.id).where(WebhookDelivery.webhook_id == webhook_id)
                                       .order_by(WebhookDelivery.id)))
        out: dict[str, Any] = {"emit": emit}
        half = len(ids) // 2
        size = database.settings.webhook_batch_size
        for mode, part in (("one_by_one", ids[:half]), ("batched", ids[half:])):
            sends: list[float] = []

            def timed(send: Any) -> Any:
                def sender(url: str, body: bytes, headers: dict[str, str], **options: Any) -> Any:
                    t = time.perf_counter()
                    outcome = send(url, body, headers, **options)
                    sends.append(time.perf_counter() - t)
                    return outcome
                return sender

            cpu, wall, before = time.process_time(), time.perf_counter(), statements[0]
            if mode == "one_by_one":
                delivered = sum(webhook_delivery.deliver_webhook(database, i, sender=timed(send_webhook)) == "delivered"
                                for i in part)
            else:
                delivered = 0
                for lo in range(0, len(part), size):
                    delivered += sum(status == "delivered" for status in webhook_batch.deliver_webhooks(
                        database, [(i, None) for i in part[lo:lo + size]], sender=timed(send_webhook)).values())
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            out[mode] = {"deliveries": len(part), "delivered": delivered,
                         "cpu_ms_per_delivery": round(1000 * cpu / max(1, len(part)), 3),
                         "wall_ms_per_delivery": round(1000 * wall / max(1, len(part)), 3),
                         "send_wall": summarize(sends),
                         "statements_per_delivery": round((statements[0] - before) / max(1, len(part)), 2),
                         "one_thread_deliveries_per_s": round(len(part) / wall, 1) if wall else None}
    finally:
        event.remove(database.engine, "before_cursor_execute", count_statement)
        database.outbox_notifier = notifier
    return out
