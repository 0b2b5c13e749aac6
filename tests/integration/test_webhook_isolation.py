"""Isolation (DELIVERY.md): a dead endpoint holds at most ``SMARTSVC_WEBHOOK_MAX_IN_FLIGHT`` worker slots.

The webhook worker's slots are played by a thread pool running the real
task on the relayed messages, in relay order, one event after another for
a hanging endpoint and a healthy one. Without the cap, every slot ends up
waiting on the hanging endpoint and the healthy partner gets nothing until
the sends time out.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import select

from smartsvc.models import WebhookDelivery
from smartsvc.services.outbox import relay_pending
from smartsvc.services.webhook_events import DELIVER_TASK
from tests.support.factories import make_app
from tests.support.webhook_receiver import Reply, WebhookReceiver
from tests.support.webhook_world import webhook_settings, webhook_world

SLOTS = 4
CAP = 2
EVENTS = 6


def _relay(world) -> list[tuple[str, int]]:
    batch: list[tuple[str, dict[str, Any], int]] = []
    relay_pending(world.database, lambda m: batch.append((m.task, dict(m.payload), m.id)))
    return [(payload["delivery_id"], outbox_id) for task, payload, outbox_id in batch if task == DELIVER_TASK]


def _run(world, message: tuple[str, int]) -> str:
    from workers.tasks.webhooks import deliver

    with world.app.app_context():
        return deliver.run(*message)


def _waiting(world, webhook_id: str) -> int:
    with world.database.session() as session:
        return len(session.scalars(select(WebhookDelivery.id).where(
            WebhookDelivery.webhook_id == uuid.UUID(webhook_id), WebhookDelivery.waiting_since.is_not(None))).all())


def test_a_hanging_endpoint_holds_at_most_its_slots_and_the_healthy_one_gets_every_event(tmp_path, database_url):
    # Batches of one: each slot is one delivery here, so the counts below are the slots'.
    app = make_app(webhook_settings(tmp_path / "var", database_url=database_url, webhook_timeout_s=4.0,
                                    webhook_max_in_flight=CAP, webhook_retry_schedule=(0, 600),
                                    webhook_batch_size=1))
    world = webhook_world(app)
    try:
        with WebhookReceiver(default=Reply.hang()) as dead, WebhookReceiver() as alive:
            hanging = world.register(dead.url(), ["suggestion.created"])
            healthy = world.register(alive.url(), ["suggestion.created"])
            for n in range(EVENTS):
                world.suggest(world.user(f"user{n}"))
            messages = _relay(world)
            assert len(messages) == 2 * EVENTS

            with ThreadPoolExecutor(SLOTS) as slots:
                running = [slots.submit(_run, world, message) for message in messages]
                alive.wait_for(EVENTS, timeout=60)
                # Every healthy delivery arrived while the hanging endpoint had only CAP requests.
                assert len(dead.requests) == CAP
                # The other hanging-endpoint tasks run on the two free slots (some maybe just after the last
                # healthy one): each ends at once, its delivery waiting.
                deadline = time.monotonic() + 10
                while _waiting(world, hanging["id"]) < EVENTS - CAP and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert _waiting(world, hanging["id"]) == EVENTS - CAP
                assert len(dead.requests) == CAP
                outcomes = [future.result() for future in running]

            assert outcomes.count("skipped") == EVENTS - CAP  # they waited without holding a slot
            assert [d["status"] for d in world.deliveries(healthy["id"])] == ["delivered"] * EVENTS
            hung = world.deliveries(hanging["id"])
            assert sorted(len(d["attempts"]) for d in hung) == [0] * (EVENTS - CAP) + [1] * CAP
            assert all(d["status"] == "pending" for d in hung)

            # The sends that timed out released the waiting deliveries: once the endpoint answers again,
            # each of them is sent (the two that timed out wait for their retry in 10 minutes).
            dead.set_default(200)
            for _ in range(EVENTS):
                released = _relay(world)
                if not released:
                    break
                assert len(released) <= CAP + 1
                for message in released:
                    _run(world, message)
            statuses = sorted(d["status"] for d in world.deliveries(hanging["id"]))
            assert statuses == ["delivered"] * (EVENTS - CAP) + ["pending"] * CAP
            assert _waiting(world, hanging["id"]) == 0
    finally:
        app.extensions["smartsvc"].database.engine.dispose()


def test_a_wait_nobody_ended_is_released_by_the_scheduled_sweep(tmp_path, database_url):
    from smartsvc.models import OutboxMessage
    from smartsvc.services.webhook_delivery import release_stranded
    from smartsvc.timeutil import simulated_clock, utcnow

    app = make_app(webhook_settings(tmp_path / "var", database_url=database_url))
    world = webhook_world(app)
    try:
        with WebhookReceiver() as alive:
            hook = world.register(alive.url(), ["suggestion.created"])
            world.suggest(world.user("alice"))
            now = utcnow()
            # What a claim that saw the endpoint busy leaves when the last send finished just before it.
            with world.database.unit_of_work() as uow:
                session = uow.session
                delivery = session.scalars(select(WebhookDelivery)).one()
                delivery.waiting_since = now
                for message in session.scalars(select(OutboxMessage).where(OutboxMessage.task == DELIVER_TASK)):
                    message.completed_at = message.sent_at = now
                uow.commit()
            assert world.drain() == 0

            assert release_stranded(world.database, now) == 0  # too recent: a finishing send may release it
            later = now + timedelta(minutes=2)
            with simulated_clock(lambda: later):
                assert release_stranded(world.database) == 1
                assert world.drain() == 1
            assert [d["status"] for d in world.deliveries(hook["id"])] == ["delivered"]
            assert len(alive.requests) == 1
            from workers.celery_app import celery_config

            schedule = celery_config(app.extensions["smartsvc"].settings)["beat_schedule"]
            assert schedule["webhook-slots"]["task"] == "smartsvc.webhooks.release_stranded"
    finally:
        app.extensions["smartsvc"].database.engine.dispose()


def test_new_events_for_an_endpoint_failing_again_and_again_wait_for_its_recovery(tmp_path, database_url):
    from smartsvc.services.webhook_events import BREAKER_FAILURES
    from smartsvc.timeutil import simulated_clock, utcnow

    app = make_app(webhook_settings(tmp_path / "var", database_url=database_url, webhook_retry_schedule=(0, 60, 600)))
    world = webhook_world(app)
    try:
        with WebhookReceiver(default=503) as failing, WebhookReceiver() as alive:
            broken = world.register(failing.url(), ["suggestion.created"])
            healthy = world.register(alive.url(), ["suggestion.created"])
            start = utcnow()
            for n in range(BREAKER_FAILURES):
                world.suggest(world.user(f"early{n}"))
            world.drain()
            assert len(failing.requests) == BREAKER_FAILURES  # each failed once: retries in a minute

            for n in range(5):  # the breaker is open: nothing is tried on the failing endpoint
                world.suggest(world.user(f"user{n}"))
            assert world.drain() == 5  # the healthy endpoint's five
            assert len(failing.requests) == BREAKER_FAILURES
            assert _waiting(world, broken["id"]) == 5
            assert world.client.post(f"/v1/webhooks/{broken['id']}/test",
                                     headers={"Authorization": f"Bearer {world.partner}"}).status_code == 202
            world.drain()
            assert len(failing.requests) == BREAKER_FAILURES + 1  # the test event is a probe: sent anyway

            failing.set_default(200)
            recovered = start + timedelta(minutes=2)  # the first deliveries' retries are due, and succeed
            with simulated_clock(lambda: recovered):
                world.drain()
            statuses = [d["status"] for d in world.deliveries(broken["id"])]
            # Every event and the test event, once their retries or the release came.
            assert statuses == ["delivered"] * (BREAKER_FAILURES + 5 + 1) and _waiting(world, broken["id"]) == 0
            assert [d["status"] for d in world.deliveries(healthy["id"])] == ["delivered"] * (BREAKER_FAILURES + 5)
    finally:
        app.extensions["smartsvc"].database.engine.dispose()
