"""``DELETE /v1/me`` (SQLite and PostgreSQL): afterwards no table, queue or log of the service names the user.

The user gets everything the API can give them (products, telemetry,
context, geofence state, suggestions pushed to the log, feedback, partner
deliveries and the sharing ledger, idempotency records); a second user gets
the same and must keep all of it. After the erasure and its task, every row
of every table in the metadata (a table added later included) is read as
text and searched for the user's id, in both its forms.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from smartsvc.logging_setup import user_pseudonym
from smartsvc.models import Base, OutboxMessage
from smartsvc.services.erasure import ERASE_TASK
from smartsvc.timeutil import utcnow
from tests.support.factories import TestUser as ApiUser
from tests.support.factories import api_key, bearer, grant, make_app
from tests.support.suggestions import suggestion_world
from tests.support.trust_world import create, post_context, pushes, run_outbox
from tests.support.webhook_receiver import WebhookReceiver
from tests.support.webhook_world import WEBHOOK_SETTINGS

FENCE = {"lat": 48.8500, "lon": 2.3500}


def _text(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)


def mentions(app: Any, user_id: str) -> list[str]:
    """``table.column`` of every value in the database that names the user (as text, JSON included)."""
    needles = (user_id, uuid.UUID(user_id).hex)
    found = []
    with app.extensions["smartsvc"].database.session() as session:
        for table in Base.metadata.sorted_tables:
            for row in session.execute(select(table)).mappings():
                for column, value in row.items():
                    if value is not None and any(n in _text(value) for n in needles):
                        found.append(f"{table.name}.{column}")
    return sorted(set(found))


def furnish(app: Any, world: Any, receiver: WebhookReceiver, name: str, rule: str) -> ApiUser:
    """A user with data in every corner the API reaches."""
    client = world.client
    response = client.post("/v1/users", json={"external_id": name, "time_zone": "Europe/Berlin"},
                           headers={**bearer(world.app_key), "Idempotency-Key": f"create-{name}"})
    assert response.status_code == 201, response.get_json()
    user = ApiUser(id=response.get_json()["id"], token=response.get_json()["access_token"])
    world.patch_me(user, max_pushes_per_day=50)
    grant(client, user, "location", "telemetry", "proactive_push", "partner_sharing")
    response = client.post("/v1/me/devices", json={"platform": "fcm", "token": f"{name}-phone"},
                           headers={**user.headers, "Idempotency-Key": f"device-{name}"})
    assert response.status_code == 201, response.get_json()
    model = create(client, world.operator, "/v1/catalog/models",
                   {"kind": "car", "brand": "smart", "name": f"{name} car", "attributes": {"length_m": 2.69}})
    product = client.post("/v1/me/products", json={"model_id": model}, headers=user.headers).get_json()["id"]
    response = client.post(f"/v1/me/products/{product}/telemetry", headers=user.headers,
                           json={"at": utcnow().isoformat(), "battery_pct": 55})
    assert response.status_code == 202, response.get_json()
    at = utcnow() - timedelta(seconds=60)
    post_context(client, user, {"type": "location", "at": at, **FENCE, "accuracy_m": 5},
                 {"type": "trip", "at": at - timedelta(seconds=1), "destination": {"lat": 48.86, "lon": 2.36},
                  "product_id": product},
                 {"type": "app", "at": at, "screen": "map"})
    sid = world.propose(user, rule, title=f"spots for {name}")
    run_outbox(app)  # pushes to the log, telemetry folded, triggers run, webhooks sent (ledger)
    world.feedback(user, sid, action="opened")
    world.propose(user, rule, title=f"later for {name}")  # a push and a webhook left pending
    return user


def test_erasure_leaves_nothing_of_the_user_anywhere(db_settings, capfd):
    app = make_app(db_settings.replace(**WEBHOOK_SETTINGS, log_level="INFO", log_json=True))  # the access log
    tokens = app.extensions["smartsvc"].tokens
    try:
        world = suggestion_world(app)
        client = world.client
        rule = world.rule("spots")
        create(client, world.operator, "/v1/geofences", {"name": "station", "center": FENCE, "radius_m": 100,
                                                         "tag": "station", "dwell_s": 600})
        with WebhookReceiver() as receiver:
            partner = api_key(app, "partner")
            create(client, partner, "/v1/webhooks", {"url": receiver.url(), "event_types": [
                "suggestion.created", "suggestion.feedback", "geofence.entered"]})
            alice = furnish(app, world, receiver, "alice", rule)
            bob = furnish(app, world, receiver, "bob", rule)
            before = mentions(app, alice.id)
            for table in ("users.id", "context_events.user_id", "user_geofence_states.user_id",
                          "telemetry_readings.user_id", "suggestions.user_id", "interactions.user_id",
                          "webhook_deliveries.user_id", "sharing_ledger.user_id", "idempotency_records.user_id",
                          "idempotency_records.response_body", "outbox_messages.user_id", "consent_events.user_id"):
                assert table in before, f"the test set nothing up in {table}"
            assert any(line["user_id"] == alice.id for line in pushes(app))

            response = client.delete("/v1/me", headers=alice.headers)
            assert response.status_code == 202, response.get_json()
            assert response.get_json()["status"] == "erasing"
            assert client.get("/v1/me", headers=alice.headers).status_code == 401  # at once
            assert client.get(f"/v1/users/{alice.id}", headers=bearer(world.app_key)).status_code == 404
            ran = run_outbox(app)
            assert ERASE_TASK in ran

        assert mentions(app, alice.id) == []
        assert not [line for line in pushes(app) if alice.id in json.dumps(line)]
        assert uuid.UUID(alice.id) not in tokens.cached_user_ids()  # the verified-token cache
        assert uuid.UUID(bob.id) in tokens.cached_user_ids()
        # The process log cannot be rewritten: it names users only by a keyed pseudonym.
        logged = capfd.readouterr().err
        secret = app.extensions["smartsvc"].settings.secret_key
        assert user_pseudonym(secret, alice.id) in logged
        assert alice.id not in logged and alice.id.replace("-", "") not in logged
        assert [line["user_id"] for line in pushes(app)].count(bob.id) >= 1
        assert "suggestions.user_id" in mentions(app, bob.id)  # the other user keeps everything
        assert client.get("/v1/me", headers=bob.headers).status_code == 200
        assert client.delete("/v1/me", headers=alice.headers).status_code == 401
        # Run again (a redelivered task): nothing more to do, nothing broken.
        from workers.tasks.erasure import erase

        with app.app_context():
            assert erase.run(alice.id) == {"rows": 0, "push_log_lines": 0}
    finally:
        app.extensions["smartsvc"].database.engine.dispose()


def test_pending_pushes_and_webhooks_are_not_sent_after_erasure(db_settings):
    app = make_app(db_settings.replace(**WEBHOOK_SETTINGS))
    try:
        world = suggestion_world(app)
        with WebhookReceiver() as receiver:
            create(world.client, api_key(app, "partner"), "/v1/webhooks",
                   {"url": receiver.url(), "event_types": ["suggestion.created"]})
            alice = world.user("alice")
            grant(world.client, alice, "partner_sharing")
            world.propose(alice, world.rule("spots"), title="queued")
            with app.extensions["smartsvc"].database.session() as session:
                queued = session.scalars(select(OutboxMessage.task).where(
                    OutboxMessage.user_id == uuid.UUID(alice.id))).all()
            assert {"smartsvc.delivery.push", "smartsvc.webhooks.deliver"} <= set(queued)
            assert world.client.delete("/v1/me", headers=alice.headers).status_code == 202
            run_outbox(app)
            assert receiver.requests == []
        assert pushes(app) == []
        assert mentions(app, alice.id) == []
    finally:
        app.extensions["smartsvc"].database.engine.dispose()
