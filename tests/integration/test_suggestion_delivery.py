"""Push delivery (SQLite and PostgreSQL): each active device once, redeliveries, failures and dead workers."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select

from smartsvc.delivery import PushResult
from smartsvc.models import Interaction, OutboxMessage, PushAttempt
from smartsvc.services.delivery import deliver_suggestion
from smartsvc.services.suggestions import PUSH_TASK
from smartsvc.timeutil import utcnow
from tests.support.suggestions import SuggestionWorld, suggestion_world


@pytest.fixture
def world(db_app) -> SuggestionWorld:
    return suggestion_world(db_app)


def test_a_suggestion_is_pushed_once_to_each_active_device(world):
    alice = world.user("alice", devices=2)
    rule = world.rule("spots")
    sid = world.propose(alice, rule, title="3 spots near Alexanderplatz")
    [item] = world.inbox(alice)
    assert (item["id"], item["status"], item["delivery_status"]) == (sid, "new", "pending")

    assert world.deliver() == 1
    assert world.deliver() == 0  # the outbox message was completed with the effect
    lines = world.pushes()
    devices = {d["id"] for d in world.client.get("/v1/me/devices", headers=alice.headers).get_json()["items"]}
    assert {line["device_id"] for line in lines} == devices and len(lines) == 2
    assert {(line["suggestion_id"], line["user_id"], line["title"], line["collapse_key"]) for line in lines} == \
        {(sid, alice.id, "3 spots near Alexanderplatz", rule)}

    detail = world.get(alice, sid)
    assert (detail["status"], detail["delivery_status"]) == ("delivered", "delivered")
    assert detail["reason"]["rule"] == {"id": rule, "name": "small spots before arrival"}
    assert detail["reason"]["facts"] == {"product.attributes.length_m": 2.69}
    assert sorted((a["provider"], a["status"], a["round"]) for a in detail["push_attempts"]) == \
        [("log", "sent", 0), ("log", "sent", 0)]
    assert {a["device_id"] for a in detail["push_attempts"]} == devices

    # The task redelivered (the broker lost its ack): nobody gets it twice.
    with world.database.session() as session:
        outbox_id = session.scalar(select(OutboxMessage.id).where(OutboxMessage.task == PUSH_TASK))
    deliver_suggestion(world.database, uuid.UUID(sid), outbox_id)
    assert len(world.pushes()) == 2


def test_proposing_twice_makes_one_suggestion_and_one_push(world):
    alice = world.user("alice")
    rule = world.rule("spots")
    first = world.propose(alice, rule, dedupe_key=f"trigger-1:{rule}")
    again = world.propose(alice, rule, dedupe_key=f"trigger-1:{rule}")
    assert again == first
    world.deliver()
    assert [item["id"] for item in world.inbox(alice)] == [first]
    assert len(world.pushes()) == 1
    with world.database.session() as session:
        created = session.scalars(select(Interaction.kind).where(Interaction.subject_id == uuid.UUID(first))).all()
    assert sorted(created) == ["suggestion.created", "suggestion.pushed"]  # once each (one device)


def test_without_an_active_device_it_stays_in_the_inbox(world):
    alice = world.user("alice", devices=0)
    sid = world.propose(alice, world.rule("spots"))
    world.deliver()
    detail = world.get(alice, sid)
    assert (detail["status"], detail["delivery_status"], detail["push_attempts"]) == ("new", "none", [])
    assert world.pushes() == []


def test_a_failed_push_and_a_dead_token(world):
    alice = world.user("alice", devices=2)
    sid = world.propose(alice, world.rule("spots"))

    class Refusing:
        name = "fake"

        def send(self, message):
            return PushResult("failed", 12, error="UNREGISTERED", token_dead=message.platform == "fcm")

    world.deliver(choose=lambda device, settings: Refusing())
    detail = world.get(alice, sid)
    assert (detail["status"], detail["delivery_status"]) == ("new", "failed")
    assert sorted((a["provider"], a["status"], a["error"], a["latency_ms"]) for a in detail["push_attempts"]) == \
        [("fake", "failed", "UNREGISTERED", 12)] * 2
    devices = world.client.get("/v1/me/devices", headers=alice.headers).get_json()["items"]
    assert {d["platform"]: d["active"] for d in devices} == {"fcm": False, "apns": True}


def test_a_claim_left_by_a_dead_worker_is_taken_over_later(world):
    alice = world.user("alice", devices=2)
    sid = world.propose(alice, world.rule("spots"))
    now = utcnow()
    devices = world.client.get("/v1/me/devices", headers=alice.headers).get_json()["items"]
    with world.database.unit_of_work() as uow:  # a worker claimed the first device and died while sending
        uow.session.add(PushAttempt(suggestion_id=uuid.UUID(sid), device_id=uuid.UUID(devices[0]["id"]), round=0,
                                    provider="log", status="sending", started_at=now))
        uow.commit()
    world.deliver(now=now)
    assert [line["device_id"] for line in world.pushes()] == [devices[1]["id"]]
    assert world.get(alice, sid)["delivery_status"] == "pending"  # not settled while a claim is open
    world.deliver(now=now + timedelta(minutes=3))  # the outbox redelivers; the stale claim is taken over
    assert sorted(line["device_id"] for line in world.pushes()) == sorted(d["id"] for d in devices)
    assert world.get(alice, sid)["delivery_status"] == "delivered"
    world.deliver(now=now + timedelta(minutes=10))
    assert len(world.pushes()) == 2


def test_the_worker_tasks_push_and_run_the_timers(world):
    from workers.tasks.delivery import push
    from workers.tasks.suggestions import timers

    alice = world.user("alice")
    sid = world.propose(alice, world.rule("spots"))
    with world.database.session() as session:
        outbox_id = session.scalar(select(OutboxMessage.id).where(OutboxMessage.task == PUSH_TASK))
    with world.app.app_context():
        assert push.name == PUSH_TASK and timers.name == "smartsvc.suggestions.timers"
        assert push.run(sid, outbox_id) == {"sent": 1, "failed": 0, "delivery_status": "delivered"}
        assert push.run(sid, outbox_id) == {"sent": 0, "failed": 0, "delivery_status": None}
        assert timers.run() == {"expired": 0, "released": 0, "repushed": 0}
    assert [line["suggestion_id"] for line in world.pushes()] == [sid]
    assert "smartsvc.suggestions.timers" in {entry["task"] for entry in
                                             world.app.extensions["celery"].conf.beat_schedule.values()}


def test_a_worker_that_died_after_its_pushes_but_before_settling_is_settled_by_the_next(world):
    alice = world.user("alice")
    sid = world.propose(alice, world.rule("spots"))
    [device] = world.client.get("/v1/me/devices", headers=alice.headers).get_json()["items"]
    now = utcnow()
    with world.database.unit_of_work() as uow:  # the push went out; the worker died before the last commit
        uow.session.add(PushAttempt(suggestion_id=uuid.UUID(sid), device_id=uuid.UUID(device["id"]), round=0,
                                    provider="log", status="sent", started_at=now, finished_at=now, latency_ms=1))
        uow.commit()
    assert world.deliver(now=now) == 1
    assert world.pushes() == []  # not sent again
    detail = world.get(alice, sid)
    assert (detail["status"], detail["delivery_status"]) == ("delivered", "delivered")
    assert world.deliver(now=now) == 0  # the outbox message is complete
