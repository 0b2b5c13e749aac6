"""Withdrawing a consent stops its processing (SQLite and PostgreSQL), one test per purpose, through the API.

Each test runs the same situation for a user who keeps the consent (the
processing happens) and one who withdraws it while the work is queued (it is
not carried out). The worker runs in-process (:func:`run_outbox`), timers are
called with an injected clock.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

from sqlalchemy import func, select

from smartsvc.models import ConsentEvent, TriggerRecord
from smartsvc.services.suggestion_timers import run_timers
from smartsvc.timeutil import utcnow
from tests.support.factories import api_key, bearer, grant, make_user
from tests.support.suggestions import berlin, parse, suggestion_world
from tests.support.trust_world import create, post_context, pushes, run_outbox, set_consent
from tests.support.webhook_receiver import WebhookReceiver
from tests.support.webhook_world import WEBHOOK_SETTINGS, webhook_world
from workers.tasks.geofence_timer import run_geofence_timer

FENCE = {"lat": 48.8500, "lon": 2.3500}
STATION_RULE = {
    "name": "at a station", "trigger": {"event": "geofence.dwelled", "tag": "station"},
    "conditions": {"all": [{"fact": "user.weekday", "op": "exists"}]},
    "action": {"recipe": "message", "params": {"title": "Still at the station", "body": "Need a spot?"}},
    "priority": 1, "cooldown_s": 0, "enabled": True,
}
ENTERED_RULE = {**STATION_RULE, "name": "entering", "trigger": {"event": "geofence.entered", "tag": "station"}}
TELEMETRY_RULE = {
    "name": "battery news", "trigger": {"event": "telemetry.updated"},
    "conditions": {"all": [{"fact": "user.weekday", "op": "exists"}]},
    "action": {"recipe": "message", "params": {"title": "Battery", "body": "Your car reported."}},
    "priority": 1, "cooldown_s": 0, "enabled": True,
}


def inbox(client, user) -> list[dict]:
    response = client.get("/v1/me/suggestions", headers=user.headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["items"]


def history(client, user, purpose: str) -> list[bool]:
    items = client.get("/v1/me/consents", headers=user.headers).get_json()["items"]
    return [change["granted"] for change in next(i for i in items if i["purpose"] == purpose)["history"]]


def test_withdrawing_proactive_push_cancels_deferred_snoozed_and_retried_pushes(db_app):
    world = suggestion_world(db_app)
    rule = world.rule("spots")
    keeps, leaves = world.user("keeps"), world.user("leaves")
    for user in (keeps, leaves):
        world.patch_me(user, quiet_hours={"start": "22:00", "end": "07:00"})
    night = berlin(2030, 3, 5, 23, 0)
    morning = berlin(2030, 3, 6, 7, 0)
    expires = berlin(2030, 3, 6, 12, 0)
    deferred = {u.id: world.propose(u, rule, now=night, expires_at=expires, title=f"for {u.id}") for u in (keeps, leaves)}
    # One pushed already, snoozed by the user: pushed again when the snooze ends.
    day = berlin(2030, 3, 6, 9, 0)
    snoozed = {u.id: world.propose(u, rule, now=day, expires_at=berlin(2030, 3, 6, 18, 0), title=f"snooze {u.id}",
                                   collapse_key=f"other-{u.id}") for u in (keeps, leaves)}
    world.deliver(now=day)
    for user in (keeps, leaves):
        world.feedback(user, snoozed[user.id], action="snoozed", snooze_min=30)

    set_consent(world.client, leaves, "proactive_push", False)

    assert world.get(leaves, deferred[leaves.id])["status"] == "suppressed"
    run_timers(world.database, now=morning)
    run_timers(world.database, now=day + timedelta(minutes=31))
    world.deliver(now=day + timedelta(minutes=31))
    pushed = [(line["user_id"], line["suggestion_id"]) for line in pushes(db_app)]
    assert pushed.count((keeps.id, deferred[keeps.id])) == 1  # after the quiet hours
    assert pushed.count((keeps.id, snoozed[keeps.id])) == 2  # and again after the snooze
    assert (leaves.id, deferred[leaves.id]) not in pushed
    assert pushed.count((leaves.id, snoozed[leaves.id])) == 1  # only the push before the withdrawal
    detail = world.get(leaves, deferred[leaves.id])
    assert (detail["status"], detail["delivery_status"], detail["push_attempts"]) == ("suppressed", "none", [])
    assert history(world.client, leaves, "proactive_push") == [True, False]


def test_withdrawing_proactive_push_drops_pending_retries(db_app):
    from smartsvc.delivery import PushResult

    class Busy:
        name = "busy"

        def send(self, message):
            return PushResult("failed", 1, error="503", retryable=True, status_code=503)

    world = suggestion_world(db_app)
    alice = world.user("alice")
    sid = world.propose(alice, world.rule("spots"))
    world.deliver(choose=lambda device, settings: Busy())
    [attempt] = world.get(alice, sid)["push_attempts"]
    retry_at = parse(attempt["retry_at"])

    set_consent(world.client, alice, "proactive_push", False)
    assert world.deliver(now=retry_at + timedelta(seconds=1)) == 0  # the retry's message is gone
    run_outbox(db_app)
    assert pushes(db_app) == []
    detail = world.get(alice, sid)
    assert (detail["status"], detail["delivery_status"]) == ("suppressed", "failed")
    assert [a["retry_at"] for a in detail["push_attempts"]] == [None]


def _station_user(client, app_key: str, name: str):
    user = make_user(client, app_key, name)
    grant(client, user, "location")
    at = utcnow() - timedelta(seconds=120)
    post_context(client, user, {"type": "location", "at": at, **FENCE, "accuracy_m": 5},
                 {"type": "trip", "at": at - timedelta(seconds=1),
                  "destination": {"lat": 48.86, "lon": 2.36}})
    return user


def test_withdrawing_location_stops_geofence_timers_and_queued_location_triggers(db_app):
    client = db_app.test_client()
    operator, app_key = api_key(db_app, "operator"), api_key(db_app, "app")
    create(client, operator, "/v1/geofences", {"name": "station", "center": FENCE, "radius_m": 100,
                                               "tag": "station", "dwell_s": 60})
    for body in (STATION_RULE, ENTERED_RULE):
        create(client, operator, "/v1/rules", body)
    keeps = _station_user(client, app_key, "keeps")
    leaves = _station_user(client, app_key, "leaves")
    assert client.get("/v1/me/context", headers=leaves.headers).get_json()["trip"] is not None

    set_consent(client, leaves, "location", False)
    fired = run_geofence_timer(db_app.extensions["smartsvc"], utcnow())
    run_outbox(db_app)

    assert sorted(s["title"] for s in inbox(client, keeps)) == ["Still at the station", "Still at the station"]
    assert inbox(client, leaves) == []  # neither the queued entry nor the dwell was processed
    assert fired == 1
    context = client.get("/v1/me/context", headers=leaves.headers).get_json()
    assert (context["location"], context["trip"], context["geofences"]) == (None, None, [])
    with db_app.extensions["smartsvc"].database.session() as session:
        events = session.scalars(select(TriggerRecord.event).where(
            TriggerRecord.user_id == uuid.UUID(leaves.id))).all()
    assert not [e for e in events if e.startswith(("geofence.", "trip."))]
    post_context(client, leaves, {"type": "location", "at": utcnow(), **FENCE, "accuracy_m": 5}, expect=403)


def test_withdrawing_telemetry_drops_queued_readings_and_their_triggers(db_app):
    client = db_app.test_client()
    operator, app_key = api_key(db_app, "operator"), api_key(db_app, "app")
    create(client, operator, "/v1/rules", TELEMETRY_RULE)
    model = create(client, operator, "/v1/catalog/models", {"kind": "car", "brand": "smart", "name": "#1",
                                                            "attributes": {"length_m": 4.27}})
    users = {}
    for name in ("keeps", "leaves"):
        user = make_user(client, app_key, name)
        grant(client, user, "telemetry")
        product = client.post("/v1/me/products", json={"model_id": model}, headers=user.headers).get_json()["id"]
        users[name] = (user, product)

    def report(name: str, battery: float, expect: int = 202) -> None:
        user, product = users[name]
        response = client.post(f"/v1/me/products/{product}/telemetry", headers=user.headers,
                               json={"at": utcnow().isoformat(), "battery_pct": battery})
        assert response.status_code == expect, response.get_json()

    report("keeps", 80)
    report("leaves", 80)
    run_outbox(db_app, skip=("smartsvc.engine.handle_trigger",))  # folded; the rules still to run
    report("keeps", 70)
    report("leaves", 70)  # queued, not folded yet

    set_consent(client, users["leaves"][0], "telemetry", False)
    run_outbox(db_app)

    keeps, leaves = users["keeps"][0], users["leaves"][0]
    assert [s["title"] for s in inbox(client, keeps)] == ["Battery", "Battery"]
    assert inbox(client, leaves) == []
    product = client.get(f"/v1/me/products/{users['leaves'][1]}", headers=leaves.headers).get_json()
    assert product["latest_telemetry"]["battery_pct"]["value"] == 80  # the queued 70 was never folded
    report("leaves", 60, expect=403)
    assert history(client, leaves, "telemetry") == [True, False]


def test_withdrawing_partner_sharing_cancels_queued_deliveries(tmp_path, db_settings):
    from tests.support.factories import make_app

    app = make_app(db_settings.replace(**WEBHOOK_SETTINGS))
    try:
        world = webhook_world(app)
        with WebhookReceiver() as receiver:
            hook = world.register(receiver.url(), ["suggestion.created"])
            keeps, leaves = world.user("keeps"), world.user("leaves")
            world.suggest(keeps)
            world.suggest(leaves)
            world.set_sharing(leaves, False)
            world.drain()
            sent = [json.loads(r.body)["data"]["user_id"] for r in receiver.requests]
        assert sent == [keeps.id]
        statuses = {d["status"] for d in world.deliveries(hook["id"])}
        assert statuses == {"delivered", "cancelled"}
        with world.database.session() as session:
            changes = session.scalar(select(func.count()).select_from(ConsentEvent).where(
                ConsentEvent.user_id == uuid.UUID(leaves.id), ConsentEvent.purpose == "partner_sharing"))
        assert changes == 2  # the history is kept
        sharing = world.client.get("/v1/me/consents", headers=bearer(leaves.token)).get_json()
        assert any(i["purpose"] == "partner_sharing" and not i["granted"] for i in sharing["items"])
    finally:
        app.extensions["smartsvc"].database.engine.dispose()
