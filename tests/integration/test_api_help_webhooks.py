"""help.requested / help.updated reach partners only with the user's partner_sharing consent (SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select
from standardwebhooks import Webhook

from smartsvc.models import SharingLedgerEntry
from tests.support.factories import api_key, bearer, grant
from tests.support.webhook_receiver import WebhookReceiver
from tests.support.webhook_world import WebhookWorld, webhook_settings, webhook_world


@pytest.fixture
def db_settings(database_url, tmp_path):
    return webhook_settings(tmp_path / "var", database_url=database_url)


@pytest.fixture
def world(db_app) -> WebhookWorld:
    return webhook_world(db_app)


@pytest.fixture
def receiver():
    with WebhookReceiver() as server:
        yield server


def test_help_events_go_to_partners_only_with_partner_sharing(world, receiver):
    hook = world.register(receiver.url("/help-desk"), ["help.requested", "help.updated"], description="help desk")
    agent = api_key(world.app, "agent")
    alice, bob = world.user("alice"), world.user("bob", sharing=False)
    grant(world.client, alice, "location")
    response = world.client.post("/v1/me/context", headers=alice.headers, json={"events": [
        {"type": "location", "lat": 52.520008, "lon": 13.404954, "accuracy_m": 8,
         "at": "2026-01-01T10:00:00+00:00"}]})
    assert response.status_code == 202, response.get_json()

    alices = world.client.post("/v1/me/help", headers=alice.headers, json={"topic": "tyres", "message": "flat tyre", "screen": "home"})
    bobs = world.client.post("/v1/me/help", headers=bob.headers, json={"topic": "tyres", "message": "flat tyre too"})
    assert alices.status_code == bobs.status_code == 201
    case_id, bobs_id = alices.get_json()["id"], bobs.get_json()["id"]
    for target in (case_id, bobs_id):
        answer = world.client.post(f"/v1/help/{target}/messages", headers=bearer(agent),
                                   json={"text": "A mobile service is on its way.", "guidance": {"screen": "map"}})
        assert answer.status_code == 201, answer.get_json()

    world.drain()
    events = [Webhook(hook["secret"]).verify(r.body, r.headers) for r in receiver.requests]
    assert [e["type"] for e in events] == ["help.requested", "help.updated"]
    requested, updated = (e["data"] for e in events)
    assert {requested["id"], updated["id"], requested["user_id"]} == {case_id, alice.id}
    assert requested["message"]["text"] == "flat tyre" and requested["snapshot"]["screen"]["name"] == "home"
    assert requested["snapshot"]["location"]["lat"] == 52.520008  # the endpoint's default precision
    assert (updated["change"], updated["status"], updated["message"]["author"]) == ("answered", "answered", "agent")
    assert updated["message"]["guidance"] == {"screen": "map", "highlight": None}
    assert bobs_id not in str(events)

    with world.database.session() as session:
        ledger = session.scalars(select(SharingLedgerEntry).where(
            SharingLedgerEntry.user_id == uuid.UUID(alice.id), SharingLedgerEntry.channel == "webhook")
            .order_by(SharingLedgerEntry.id)).all()
        bobs_ledger = session.scalars(select(SharingLedgerEntry.channel).where(
            SharingLedgerEntry.user_id == uuid.UUID(bob.id))).all()
    assert [entry.event_type for entry in ledger] == ["help.requested", "help.updated"]
    assert {"snapshot.location.lat", "message.text"} <= set(ledger[0].fields)
    assert bobs_ledger == ["agent"]  # bob's case went to the agent, never to the partner
