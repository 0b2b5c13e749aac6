"""Device and attempt bookkeeping shared by every push provider (FCM, APNs, Web Push), on SQLite and PostgreSQL.

Providers are stand-ins here (``choose=``): what is checked is what the
delivery service makes of their answers.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select

from smartsvc.delivery import PushResult
from smartsvc.models import Device, OutboxMessage
from smartsvc.services.delivery import deliver_suggestion
from smartsvc.services.suggestions import PUSH_TASK
from tests.integration.test_push_fcm import clock_start, devices, open_push_messages, run_due
from tests.support.suggestions import SuggestionWorld, suggestion_world


@pytest.fixture
def world(db_app) -> SuggestionWorld:
    return suggestion_world(db_app)


class Scripted:
    """A provider answering from a per-platform script (then ``sent``), recording what it sent."""

    name = "scripted"

    def __init__(self, **answers: list[PushResult]) -> None:
        self.answers = {platform: list(results) for platform, results in answers.items()}
        self.sent: list[tuple[str, str]] = []

    def send(self, message):
        queue = self.answers.get(message.platform) or []
        result = queue.pop(0) if queue else PushResult("sent", 3, status_code=200)
        if result.ok:
            self.sent.append((message.platform, str(message.suggestion_id)))
        return result


def deliver(world: SuggestionWorld, provider: Scripted, now) -> None:
    """Run the due push messages with ``provider`` for every device."""
    with world.database.session() as session:
        due = list(session.execute(select(OutboxMessage.id, OutboxMessage.payload).where(
            OutboxMessage.task == PUSH_TASK, OutboxMessage.completed_at.is_(None),
            OutboxMessage.available_at <= now).order_by(OutboxMessage.id)))
    for outbox_id, payload in due:
        deliver_suggestion(world.database, uuid.UUID(payload["suggestion_id"]), outbox_id, now=now,
                           choose=lambda device, settings: provider)


def registered(world: SuggestionWorld, device_id: str):
    with world.database.session() as session:
        device = session.get(Device, uuid.UUID(device_id))
        return device.created_at, device.last_seen_at


def test_a_dead_token_spares_a_device_that_registered_again_after_it_died(world):
    gina = world.user("gina", devices=2)
    iphone = devices(world, gina)["apns"]
    created, _ = registered(world, iphone["id"])
    # The phone registers the same token again later (the app was reinstalled and got it back).
    response = world.client.post("/v1/me/devices", headers=gina.headers,
                                 json={"platform": "apns", "token": "gina-phone-1"})
    assert response.status_code in (200, 201)
    _, seen = registered(world, iphone["id"])
    assert seen > created
    died = created + (seen - created) / 2  # APNs: the token was unregistered before the re-registration
    provider = Scripted(apns=[PushResult("failed", 4, error="Unregistered", token_dead=True,
                                         token_dead_since=died, status_code=410)])
    now = clock_start()  # after the set-up: its messages must be due at once, however slow the machine
    world.propose(gina, world.rule("spots"), now=now)
    deliver(world, provider, now)
    assert devices(world, gina)["apns"]["active"] is True

    # Unregistered after its last registration: switched off after that one send.
    provider = Scripted(apns=[PushResult("failed", 4, error="Unregistered", token_dead=True,
                                         token_dead_since=seen + timedelta(seconds=1), status_code=410)])
    world.propose(gina, world.rule("spots-2"), now=now + timedelta(minutes=1), title="Other")
    deliver(world, provider, now + timedelta(minutes=1))
    assert devices(world, gina)["apns"]["active"] is False
    assert devices(world, gina)["fcm"]["active"] is True


def test_delivered_on_one_phone_while_the_other_is_retried_later(world):
    hana = world.user("hana", devices=2)
    provider = Scripted(apns=[PushResult("failed", 9, error="ServiceUnavailable", retryable=True, status_code=503)])
    now = clock_start()  # after the set-up: its messages must be due at once, however slow the machine
    sid = world.propose(hana, world.rule("spots"), now=now, expires_at=now + timedelta(hours=1))
    deliver(world, provider, now)
    detail = world.get(hana, sid)
    assert (detail["status"], detail["delivery_status"]) == ("delivered", "delivered")
    assert provider.sent == [("fcm", sid)]
    assert open_push_messages(world) == [now + timedelta(seconds=30)]  # the first backoff step

    deliver(world, provider, now + timedelta(seconds=31))
    assert provider.sent == [("fcm", sid), ("apns", sid)]  # the Android phone did not get it twice
    tries = sorted((a["platform"], a["try_number"], a["status"]) for a in world.get(hana, sid)["push_attempts"])
    assert tries == [("apns", 1, "failed"), ("apns", 2, "sent"), ("fcm", 1, "sent")]
    assert open_push_messages(world) == []
    run_due(world, now + timedelta(hours=2))
    assert len(provider.sent) == 2
