"""Pushes through FCM HTTP v1 (the real provider code) against a local FCM stand-in, on SQLite and PostgreSQL.

What a user notices: the phone's push service gets a message it accepts
(collapse key, TTL, priority); a phone FCM no longer knows is switched off
after one try and gets nothing more; a throttled push arrives later; and the
suggestion says whether it was delivered.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any, Iterator

import pytest
from sqlalchemy import select

from smartsvc.models import OutboxMessage
from smartsvc.services.delivery import deliver_suggestion
from smartsvc.services.suggestions import PUSH_TASK
from smartsvc.timeutil import utcnow
from tests.support.fake_fcm import FakeFcm, throttled, unavailable
from tests.support.suggestions import SuggestionWorld, suggestion_world


@pytest.fixture
def fcm() -> Iterator[FakeFcm]:
    with FakeFcm(project_id="smartsvc-push") as fake:
        yield fake


@pytest.fixture
def db_settings(db_settings, fcm, tmp_path):
    """The app's FCM settings point at the fake; the project comes from the credentials file."""
    return db_settings.replace(fcm_url=fcm.url, fcm_credentials=fcm.write_credentials(tmp_path / "fcm-sa.json"))


@pytest.fixture
def world(db_app) -> SuggestionWorld:
    return suggestion_world(db_app)


def clock_start() -> datetime:
    """The tests' clock: a little ahead of the real one, so outbox messages written now are due at once."""
    return utcnow() + timedelta(seconds=5)


def run_due(world: SuggestionWorld, now: datetime) -> int:
    """Run the push messages the outbox relay would publish at ``now`` (their ``available_at`` passed)."""
    with world.database.session() as session:
        due = list(session.execute(select(OutboxMessage.id, OutboxMessage.payload).where(
            OutboxMessage.task == PUSH_TASK, OutboxMessage.completed_at.is_(None),
            OutboxMessage.available_at <= now).order_by(OutboxMessage.id)))
    for outbox_id, payload in due:
        deliver_suggestion(world.app.extensions["smartsvc"], uuid.UUID(payload["suggestion_id"]), outbox_id, now=now)
    return len(due)


def open_push_messages(world: SuggestionWorld) -> list[Any]:
    with world.database.session() as session:
        return list(session.scalars(select(OutboxMessage.available_at).where(
            OutboxMessage.task == PUSH_TASK, OutboxMessage.completed_at.is_(None))))


def devices(world: SuggestionWorld, user) -> dict[str, dict[str, Any]]:
    items = world.client.get("/v1/me/devices", headers=user.headers).get_json()["items"]
    return {d["platform"]: d for d in items}


def test_a_suggestion_reaches_fcm_with_collapse_key_ttl_and_priority(world, fcm):
    alice = world.user("alice", devices=2)  # an Android phone (fcm) and an iPhone (apns, not configured: log)
    now = clock_start()
    sid = world.propose(alice, world.rule("spots"), now=now, title="3 spots that fit your car",
                        body="120 m from your destination, free until 18:00", collapse_key="spots:alice-trip",
                        expires_at=now + timedelta(minutes=30))
    run_due(world, now)

    [message] = fcm.sent_to("alice-phone-0")
    assert message["notification"] == {"title": "3 spots that fit your car",
                                       "body": "120 m from your destination, free until 18:00"}
    assert message["android"] == {"collapseKey": "spots:alice-trip", "ttl": "1800s", "priority": "HIGH"}
    assert message["apns"]["headers"]["apns-collapse-id"] == "spots:alice-trip"
    assert (message["data"]["suggestion_id"], message["data"]["kind"]) == (sid, "spots_near_destination")
    assert fcm.refusals == []
    # The iPhone went to the log provider; nothing of the Android phone did.
    assert [line["device_id"] for line in world.pushes()] == [devices(world, alice)["apns"]["id"]]

    detail = world.get(alice, sid)
    assert (detail["status"], detail["delivery_status"]) == ("delivered", "delivered")
    by_provider = {a["provider"]: a for a in detail["push_attempts"]}
    assert set(by_provider) == {"fcm", "log"}
    fcm_try = by_provider["fcm"]
    assert (fcm_try["status"], fcm_try["status_code"], fcm_try["try_number"], fcm_try["error"],
            fcm_try["retry_at"]) == ("sent", 200, 1, None, None)
    assert fcm_try["device_id"] == devices(world, alice)["fcm"]["id"] and fcm_try["latency_ms"] >= 0


def test_an_unregistered_token_switches_the_device_off_after_one_send(world, fcm):
    bob = world.user("bob")
    now = clock_start()
    fcm.unregister("bob-phone-0")
    rule = world.rule("spots")
    first = world.propose(bob, rule, now=now)
    run_due(world, now)

    detail = world.get(bob, first)
    assert detail["delivery_status"] == "failed"
    [attempt] = detail["push_attempts"]
    assert (attempt["provider"], attempt["status"], attempt["status_code"], attempt["retry_at"]) == \
        ("fcm", "failed", 404, None)
    assert "UNREGISTERED" in attempt["error"]
    phone = devices(world, bob)["fcm"]
    assert phone["active"] is False and "no longer knows" in phone["deactivated_reason"]
    assert len(fcm.refusals) == 1 and open_push_messages(world) == []

    second = world.propose(bob, rule, now=now + timedelta(minutes=5), title="Another spot")
    run_due(world, now + timedelta(minutes=5))
    assert len(fcm.refusals) == 1 and fcm.messages == []  # FCM never heard of bob again
    assert world.get(bob, second)["delivery_status"] == "none"


def test_a_throttled_push_is_tried_again_after_retry_after_and_then_delivered(world, fcm):
    carol = world.user("carol")
    now = clock_start()
    fcm.script("carol-phone-0", throttled(retry_after=300))
    sid = world.propose(carol, world.rule("spots"), now=now, expires_at=now + timedelta(hours=1))
    run_due(world, now)

    detail = world.get(carol, sid)
    assert (detail["status"], detail["delivery_status"]) == ("new", "pending")
    [first] = detail["push_attempts"]
    assert (first["status"], first["status_code"], first["try_number"]) == ("failed", 429, 1)
    assert datetime.fromisoformat(first["retry_at"]) == now + timedelta(seconds=300)  # Retry-After beats 30 s
    assert open_push_messages(world) == [now + timedelta(seconds=300)]

    assert run_due(world, now + timedelta(seconds=60)) == 0  # not due yet: the relay holds it back
    # Even run early (a worker with a fast clock), it does not push before the time and keeps the retry.
    deliver_suggestion(world.app.extensions["smartsvc"], uuid.UUID(sid), None, now=now + timedelta(seconds=60))
    assert fcm.sent_to("carol-phone-0") == []

    assert run_due(world, now + timedelta(seconds=301)) >= 1
    assert len(fcm.sent_to("carol-phone-0")) == 1
    detail = world.get(carol, sid)
    assert (detail["status"], detail["delivery_status"]) == ("delivered", "delivered")
    assert sorted((a["try_number"], a["status"], a["status_code"]) for a in detail["push_attempts"]) == \
        [(1, "failed", 429), (2, "sent", 200)]

    # Every message redelivered by the broker: still one push.
    with world.database.session() as session:
        ids = list(session.scalars(select(OutboxMessage.id).where(OutboxMessage.task == PUSH_TASK)))
    for outbox_id in ids:
        deliver_suggestion(world.app.extensions["smartsvc"], uuid.UUID(sid), outbox_id,
                           now=now + timedelta(seconds=400))
    assert len(fcm.sent_to("carol-phone-0")) == 1 and open_push_messages(world) == []


def test_the_oauth_token_is_fetched_from_the_files_token_uri_once_and_reused(world, fcm):
    dave = world.user("dave")
    now = clock_start()
    rule = world.rule("spots")
    for n in range(3):
        world.propose(dave, rule, now=now + timedelta(minutes=n), title=f"Parking {n}")
        run_due(world, now + timedelta(minutes=n))
    assert len(fcm.sent_to("dave-phone-0")) == 3
    [claims] = fcm.token_requests
    assert claims["iss"] == "pusher@smartsvc-test.iam.gserviceaccount.com"
    assert claims["scope"] == "https://www.googleapis.com/auth/firebase.messaging"
    assert len(set(fcm.bearers)) == 1 and len(fcm.bearers) == 3

    # Google revokes it early: the next push gets 401, fetches a new token once and goes through.
    fcm.revoke_tokens()
    world.propose(dave, rule, now=now + timedelta(minutes=5), title="Parking again")
    run_due(world, now + timedelta(minutes=5))
    assert len(fcm.sent_to("dave-phone-0")) == 4 and len(fcm.token_requests) == 2


def test_tries_run_out_and_the_suggestion_is_failed(world, fcm):
    erin = world.user("erin")
    now = clock_start()
    fcm.script("erin-phone-0", *[unavailable()] * 6)
    sid = world.propose(erin, world.rule("spots"), now=now, expires_at=now + timedelta(hours=2))
    clock = now
    for _ in range(8):  # more relay rounds than there are tries
        run_due(world, clock)
        clock += timedelta(minutes=11)
    detail = world.get(erin, sid)
    assert detail["delivery_status"] == "failed"
    tries = sorted((a["try_number"], a["status"], a["status_code"]) for a in detail["push_attempts"])
    assert tries == [(n, "failed", 503) for n in range(1, 6)]  # SMARTSVC_PUSH_MAX_TRIES (5)
    assert "gave up after 5 tries" in max(detail["push_attempts"], key=lambda a: a["try_number"])["error"]
    assert fcm.messages == [] and open_push_messages(world) == []


def test_nothing_is_pushed_after_the_suggestion_expires(world, fcm):
    frank = world.user("frank")
    now = clock_start()
    fcm.script("frank-phone-0", unavailable(retry_after=120))
    sid = world.propose(frank, world.rule("spots"), now=now, expires_at=now + timedelta(minutes=10))
    run_due(world, now)
    assert world.get(frank, sid)["delivery_status"] == "pending"

    run_due(world, now + timedelta(minutes=11))  # the retry's message runs after the expiry
    assert fcm.messages == []
    detail = world.get(frank, sid)
    assert (detail["status"], detail["delivery_status"]) == ("expired", "failed")
    assert len(detail["push_attempts"]) == 1 and open_push_messages(world) == []
