"""Partner webhook delivery end to end: events → signed requests to a local receiver, retries, disabling, order.

Endpoints are registered through the API, events come from the places that
emit them (a stored suggestion, a published dataset, POST .../test), the
worker is the real relay + Celery task run in-process (tests/support/
webhook_world.py), and what a partner notices is checked at the receiver —
signatures with the ``standardwebhooks`` library, unchanged.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from smartsvc.timeutil import simulated_clock, utcnow
from tests.support.factories import bearer
from tests.support.webhook_receiver import Reply, WebhookReceiver
from tests.support.webhook_world import WebhookWorld, webhook_settings, webhook_world


@pytest.fixture
def db_settings(database_url, tmp_path):
    """The integration settings, letting webhooks reach the local receiver."""
    return webhook_settings(tmp_path / "var", database_url=database_url)


@pytest.fixture
def world(db_app) -> WebhookWorld:
    return webhook_world(db_app)


@pytest.fixture
def receiver():
    with WebhookReceiver() as server:
        yield server


def verified(secret: str, request) -> dict:
    """The payload, verified as a partner would (raises when the signature does not match)."""
    return Webhook(secret).verify(request.body, request.headers)


def test_an_event_reaches_the_partner_signed_and_logged(world, receiver):
    hook = world.register(receiver.url("/hooks/a"), ["suggestion.created"], description="CRM")
    assert hook["secret"].startswith("whsec_") and "secret" not in world.webhook(hook["id"])
    alice = world.user("alice")
    sid = world.suggest(alice, title="3 spots near Alexanderplatz")

    assert world.drain() == 1
    [request] = receiver.requests
    payload = verified(hook["secret"], request)
    assert (request.method, request.path, request.headers["content-type"]) == ("POST", "/hooks/a",
                                                                               "application/json")
    assert payload["type"] == "suggestion.created"
    assert datetime.fromisoformat(payload["timestamp"].replace("Z", "+00:00")) <= utcnow()
    assert (payload["data"]["id"], payload["data"]["user_id"], payload["data"]["title"]) == \
        (sid, alice.id, "3 spots near Alexanderplatz")

    [delivery] = world.deliveries(hook["id"])
    assert delivery["message_id"] == request.headers["webhook-id"]
    assert (delivery["status"], delivery["event_type"], delivery["last_status_code"]) == \
        ("delivered", "suggestion.created", 200)
    [attempt] = delivery["attempts"]
    assert (attempt["status"], attempt["status_code"], attempt["next_retry_at"]) == ("succeeded", 200, None)
    assert attempt["latency_ms"] >= 0
    assert world.drain() == 0  # nothing more is due: sent once


def test_a_failing_endpoint_is_retried_and_the_success_keeps_the_webhook_id(world, receiver):
    hook = world.register(receiver.url(), ["suggestion.created"])
    receiver.script(500, Reply(302, headers={"Location": receiver.url("/elsewhere")}), 200)
    world.suggest(world.user("alice"))

    world.drain()
    requests = receiver.requests
    assert [r.path for r in requests] == ["/hook"] * 3  # the redirect was not followed
    assert len({r.headers["webhook-id"] for r in requests}) == 1
    for request in requests:
        verified(hook["secret"], request)
    [delivery] = world.deliveries(hook["id"])
    assert delivery["status"] == "delivered"
    assert [(a["number"], a["status"], a["status_code"]) for a in delivery["attempts"]] == \
        [(1, "failed", 500), (2, "failed", 302), (3, "succeeded", 200)]
    assert "redirect" in delivery["attempts"][1]["error"]
    assert delivery["attempts"][0]["next_retry_at"] is not None
    assert world.webhook(hook["id"])["failing_since"] is None  # the success ended the failure streak


def test_retries_follow_the_schedule_and_retry_after(tmp_path):
    from tests.support.factories import make_app

    app = make_app(webhook_settings(tmp_path / "var", webhook_retry_schedule=(0, 5, 300)))
    world = webhook_world(app)
    with WebhookReceiver() as receiver:
        hook = world.register(receiver.url(), ["suggestion.created"])
        receiver.script(Reply(503, retry_after="120"), 500, 500)
        world.suggest(world.user("alice"))
        before = utcnow()
        world.drain()
        after = utcnow()
        assert len(receiver.requests) == 1  # the next try waits: Retry-After (120 s) beats the schedule (5 s)
        [delivery] = world.deliveries(hook["id"])
        due = datetime.fromisoformat(delivery["next_attempt_at"])
        assert (delivery["status"], delivery["attempts"][0]["status_code"]) == ("pending", 503)
        assert before + timedelta(seconds=120) <= due <= after + timedelta(seconds=120)

        with simulated_clock(lambda: before + timedelta(seconds=125)):
            world.drain()  # second try fails (500): the schedule's 300 s (±10 %) comes next
        assert len(receiver.requests) == 2
        [delivery] = world.deliveries(hook["id"])
        wait = datetime.fromisoformat(delivery["next_attempt_at"]) - (before + timedelta(seconds=125))
        assert timedelta(seconds=269) <= wait <= timedelta(seconds=331)

        with simulated_clock(lambda: before + timedelta(hours=1)):
            world.drain()  # the third and last try fails: given up
        [delivery] = world.deliveries(hook["id"])
        assert (delivery["status"], len(delivery["attempts"]), delivery["next_attempt_at"]) == ("failed", 3, None)
        assert "gave up after 3 attempts" in delivery["status_reason"]


def test_410_disables_the_endpoint_at_once(world, receiver):
    hook = world.register(receiver.url(), ["suggestion.created"])
    receiver.script(410)
    alice = world.user("alice")
    world.suggest(alice)
    world.drain()

    shown = world.webhook(hook["id"])
    assert shown["enabled"] is False and "410" in shown["disabled_reason"]
    assert [n["kind"] for n in shown["notices"]] == ["webhook.disabled"]
    [delivery] = world.deliveries(hook["id"])
    assert (delivery["status"], len(delivery["attempts"])) == ("failed", 1)

    world.suggest(alice)  # a disabled endpoint gets nothing more
    world.drain()
    assert len(receiver.requests) == 1 and len(world.deliveries(hook["id"])) == 1
    test = world.client.post(f"/v1/webhooks/{hook['id']}/test", headers=bearer(world.partner))
    assert test.status_code == 409

    enabled = world.client.patch(f"/v1/webhooks/{hook['id']}", headers=bearer(world.partner), json={"enabled": True})
    assert enabled.status_code == 200 and enabled.get_json()["disabled_reason"] is None
    world.suggest(alice)
    world.drain()
    assert len(receiver.requests) == 2


def test_an_endpoint_failing_for_five_days_is_disabled_with_a_notice(tmp_path):
    from tests.support.factories import make_app

    app = make_app(webhook_settings(tmp_path / "var", webhook_retry_schedule=(0, 3600, 3600)))
    world = webhook_world(app)
    with WebhookReceiver(default=500) as receiver:
        hook = world.register(receiver.url(), ["suggestion.created"])
        alice = world.user("alice")
        start = utcnow() - timedelta(days=6)
        with simulated_clock(lambda: start):
            world.suggest(alice)
            world.drain()
        assert world.webhook(hook["id"])["enabled"] is True  # one failure six days ago
        world.drain()  # its retry, due for long, fails now: six days without a success
        shown = world.webhook(hook["id"])
        assert shown["enabled"] is False and "failed for 6 days" in shown["disabled_reason"]
        assert [n["kind"] for n in shown["notices"]] == ["webhook.disabled"]
        assert world.deliveries(hook["id"])[0]["status"] == "failed"
        assert len(receiver.requests) == 2


def test_order_is_kept_per_endpoint_and_subject_but_other_subjects_go_on(tmp_path):
    from tests.support.factories import make_app

    app = make_app(webhook_settings(tmp_path / "var", webhook_retry_schedule=(0, 600)))
    world = webhook_world(app)
    with WebhookReceiver() as receiver:
        hook = world.register(receiver.url(), ["suggestion.created"])
        alice, bob = world.user("alice"), world.user("bob")
        receiver.script(500)
        first = world.suggest(alice, title="first")
        second = world.suggest(alice, title="second")
        other = world.suggest(bob, title="bob's")
        world.drain()
        sent = [json.loads(r.body)["data"]["title"] for r in receiver.requests]
        assert sent == ["first", "bob's"]  # alice's second waits for her first, pending a retry

        later = utcnow() + timedelta(minutes=15)
        with simulated_clock(lambda: later):
            world.drain()
        sent = [json.loads(r.body)["data"]["title"] for r in receiver.requests]
        assert sent == ["first", "bob's", "first", "second"]
        statuses = {d["payload"]["data"]["id"]: d["status"] for d in world.deliveries(hook["id"])}
        assert statuses == {first: "delivered", second: "delivered", other: "delivered"}


def test_rotation_signs_with_both_secrets_for_24_hours(world, receiver):
    hook = world.register(receiver.url(), ["suggestion.created"])
    old = hook["secret"]
    alice = world.user("alice")

    rotated = world.client.post(f"/v1/webhooks/{hook['id']}/rotate-secret", headers=bearer(world.partner))
    assert rotated.status_code == 200
    new = rotated.get_json()["secret"]
    assert new != old and new.startswith("whsec_")
    world.suggest(alice)
    world.drain()
    [request] = receiver.requests
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    assert verified(old, request) == verified(new, request)

    # A rotation 25 hours ago: the old secret has stopped signing.
    earlier = utcnow() - timedelta(hours=25)
    with simulated_clock(lambda: earlier):
        again = world.client.post(f"/v1/webhooks/{hook['id']}/rotate-secret", headers=bearer(world.partner))
    newest = again.get_json()["secret"]
    world.suggest(alice)
    world.drain()
    latest = receiver.requests[-1]
    assert len(latest.headers["webhook-signature"].split(" ")) == 1
    verified(newest, latest)
    with pytest.raises(WebhookVerificationError):
        verified(new, latest)


def test_manual_retry_and_recover_send_failed_deliveries_again(world, receiver):
    hook = world.register(receiver.url(), ["suggestion.created"])
    receiver.set_default(500)
    alice, bob = world.user("alice"), world.user("bob")
    world.suggest(alice)
    world.suggest(bob)
    world.drain()  # four tries each (the schedule in tests), all failed
    failed = world.deliveries(hook["id"], status="failed")
    assert len(failed) == 2 and all(len(d["attempts"]) == 4 for d in failed)

    receiver.set_default(200)
    one = failed[-1]
    retried = world.client.post(f"/v1/webhooks/{hook['id']}/deliveries/{one['id']}/retry",
                                headers=bearer(world.partner))
    assert retried.status_code == 202 and retried.get_json()["status"] == "pending"
    world.drain()
    assert receiver.requests[-1].headers["webhook-id"] == one["message_id"]
    assert [d["status"] for d in world.deliveries(hook["id"])] == ["failed", "delivered"]

    since = (utcnow() - timedelta(hours=1)).isoformat()
    recovered = world.client.post(f"/v1/webhooks/{hook['id']}/recover", headers=bearer(world.partner),
                                  json={"since": since})
    assert recovered.status_code == 202 and recovered.get_json() == {"requeued": 1, "more": False}
    world.drain()
    assert [d["status"] for d in world.deliveries(hook["id"])] == ["delivered", "delivered"]
    assert receiver.requests[-1].headers["webhook-id"] == failed[0]["message_id"]

    future = world.client.post(f"/v1/webhooks/{hook['id']}/recover", headers=bearer(world.partner),
                               json={"since": (utcnow() + timedelta(hours=1)).isoformat()})
    assert future.status_code == 422 and "since" in future.get_json()["errors"]


def test_the_test_event_goes_to_that_endpoint_only(world, receiver):
    hook = world.register(receiver.url("/a"), ["dataset.published"])
    world.register(receiver.url("/b"), ["dataset.published"])
    response = world.client.post(f"/v1/webhooks/{hook['id']}/test", headers=bearer(world.partner))
    assert response.status_code == 202
    assert (response.get_json()["event_type"], response.get_json()["status"]) == ("webhook.test", "pending")
    world.drain()
    [request] = receiver.requests
    assert request.path == "/a"
    payload = verified(hook["secret"], request)
    assert payload["type"] == "webhook.test" and payload["data"]["webhook_id"] == hook["id"]


def test_geofence_events_of_a_consenting_user_reach_the_partner(world, receiver):
    from geographiclib.geodesic import Geodesic

    hook = world.register(receiver.url(), ["geofence.entered", "geofence.exited"])
    operator = world.key("operator")
    fence = world.client.post("/v1/geofences", headers=bearer(operator), json={
        "name": "dealer", "center": {"lat": 52.52, "lon": 13.405}, "radius_m": 150, "tag": "dealer"})
    assert fence.status_code == 201, fence.get_json()
    alice = world.user("alice")
    response = world.client.put("/v1/me/consents/location", headers=alice.headers, json={"granted": True})
    assert response.status_code == 200
    far = Geodesic.WGS84.Direct(52.52, 13.405, 0, 800)
    t0 = utcnow().replace(microsecond=0) - timedelta(minutes=10)
    fixes = [(0, (far["lat2"], far["lon2"])), (60, (52.52, 13.405)), (160, (far["lat2"], far["lon2"]))]
    for seconds, (lat, lon) in fixes:
        sent = world.client.post("/v1/me/context", headers=alice.headers, json={"events": [{
            "type": "location", "at": (t0 + timedelta(seconds=seconds)).isoformat(), "lat": lat, "lon": lon,
            "accuracy_m": 5}]})
        assert sent.status_code == 202, sent.get_json()

    world.drain()
    payloads = [verified(hook["secret"], r) for r in receiver.requests]
    assert [(p["type"], p["data"]["geofence_id"], p["data"]["user_id"]) for p in payloads] == [
        ("geofence.entered", fence.get_json()["id"], alice.id), ("geofence.exited", fence.get_json()["id"], alice.id)]
    assert payloads[1]["data"]["inside_s"] == 100


def test_a_task_run_twice_sends_once(world, receiver):
    from sqlalchemy import select

    from smartsvc.models import OutboxMessage
    from smartsvc.services.webhook_events import DELIVER_TASK
    from workers.tasks.webhooks import deliver

    hook = world.register(receiver.url(), ["webhook.test"])
    delivery = world.client.post(f"/v1/webhooks/{hook['id']}/test", headers=bearer(world.partner)).get_json()
    with world.database.session() as session:
        outbox_id = session.scalar(select(OutboxMessage.id).where(OutboxMessage.task == DELIVER_TASK))
    with world.app.app_context():
        assert deliver.run(delivery["id"], outbox_id) == "delivered"
        assert deliver.run(delivery["id"], outbox_id) == "skipped"  # the broker redelivered it
    world.drain()  # the relay publishes it too (it was never marked sent): still nothing more is sent
    assert len(receiver.requests) == 1


def test_a_send_left_by_a_dead_worker_is_taken_over_later(world, receiver):
    import uuid

    from smartsvc.models import WebhookAttempt, WebhookDelivery
    from smartsvc.services.webhook_delivery import deliver_webhook

    hook = world.register(receiver.url(), ["webhook.test"])
    delivery = world.client.post(f"/v1/webhooks/{hook['id']}/test", headers=bearer(world.partner)).get_json()
    now = utcnow()
    with world.database.unit_of_work() as uow:  # a worker claimed it and died while sending
        row = uow.session.get(WebhookDelivery, uuid.UUID(delivery["id"]))
        row.attempts, row.sending_since = 1, now
        uow.session.add(WebhookAttempt(delivery_id=row.id, number=1, status="sending", started_at=now))
        uow.commit()
    assert deliver_webhook(world.database, uuid.UUID(delivery["id"]), now=now + timedelta(seconds=30)) == "skipped"
    assert receiver.requests == []  # it may still be sending: not sent twice
    assert deliver_webhook(world.database, uuid.UUID(delivery["id"]), now=now + timedelta(minutes=3)) == "delivered"
    [shown] = world.deliveries(hook["id"])
    assert [(a["number"], a["status"]) for a in shown["attempts"]] == [(1, "failed"), (2, "succeeded")]
    assert "worker stopped" in shown["attempts"][0]["error"]
    assert len(receiver.requests) == 1


def test_a_dead_endpoint_times_out_and_the_others_still_get_the_event(tmp_path):
    from tests.support.factories import make_app

    world = webhook_world(make_app(webhook_settings(tmp_path / "var", webhook_timeout_s=1.0,
                                                    webhook_retry_schedule=(0, 600))))
    with WebhookReceiver(default=Reply.hang()) as dead, WebhookReceiver() as alive:
        silent = world.register(dead.url(), ["suggestion.created"])
        healthy = world.register(alive.url(), ["suggestion.created"])
        world.suggest(world.user("alice"))
        world.drain()
        assert len(alive.requests) == 1 and len(dead.requests) == 1
        [stuck] = world.deliveries(silent["id"])
        assert (stuck["status"], stuck["attempts"][0]["status"], stuck["attempts"][0]["status_code"]) == \
            ("pending", "failed", None)
        assert "timeout" in stuck["attempts"][0]["error"].lower() or "timed out" in stuck["attempts"][0]["error"]
        assert world.deliveries(healthy["id"])[0]["status"] == "delivered"
        from workers.celery_app import celery_config

        routes = celery_config(world.app.extensions["smartsvc"].settings)["task_routes"]
        assert routes == {"smartsvc.webhooks.deliver": {"queue": "webhooks"},  # a queue of their own
                          "smartsvc.webhooks.deliver_batch": {"queue": "webhooks"}}
