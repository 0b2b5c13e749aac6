"""``GET /v1/me/export`` (SQLite and PostgreSQL): everything stored about the user, one JSON document.

Complete by design: every table with a ``user_id`` column must have a section,
and each of the user's rows in it must be in the export — a table added later
without export coverage fails here.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select

from smartsvc.models import Interaction, TriggerRecord, UserGeofenceState
from smartsvc.models.base import Base
from smartsvc.services.export import BATCH, table_sections
from smartsvc.timeutil import utcnow
from tests.support.factories import TestUser as ApiUser
from tests.support.factories import bearer, grant
from tests.support.geodata import add_vehicle_model, own
from tests.support.suggestions import SuggestionWorld
from tests.support.trust_world import post_context, run_outbox
from tests.support.webhook_receiver import WebhookReceiver
from tests.support.webhook_world import webhook_settings, webhook_world

PHONE_TOKEN = "fcm-registration-token-of-alice-9f3K"


@pytest.fixture
def db_settings(database_url, tmp_path):
    """The integration settings, letting webhooks reach the local receiver."""
    return webhook_settings(tmp_path / "var", database_url=database_url)


def user_tables() -> list[Any]:
    return [table for table in Base.metadata.sorted_tables if "user_id" in table.c]


def export(client: Any, user: ApiUser) -> dict[str, Any]:
    response = client.get("/v1/me/export", headers=user.headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    assert "attachment" in response.headers["Content-Disposition"]
    return json.loads(response.get_data(as_text=True))


def key_of(row: Any, table: Any) -> tuple[str, ...]:
    return tuple(str(row[column.name]) for column in table.primary_key.columns)


def live_user(db_app: Any, name: str) -> tuple[Any, ApiUser]:
    """A user with data in every table that holds a user id, made through the API where there is one."""
    world = webhook_world(db_app)
    sworld = SuggestionWorld(db_app, world.client, world.key("operator"), world.app_key)
    client, database = world.client, world.database
    user = world.user(name)
    grant(client, user, "location", "telemetry", "proactive_push")
    response = client.post("/v1/me/devices", json={"platform": "fcm", "token": PHONE_TOKEN},
                           headers={**user.headers, "Idempotency-Key": f"phone-{name}"})
    assert response.status_code == 201, response.get_json()
    product = own(client, user, add_vehicle_model(client, sworld.operator, f"fortwo {name}", length_m=2.69))
    response = client.post(f"/v1/me/products/{product}/telemetry", headers=user.headers,
                           json={"at": utcnow().isoformat(), "battery_pct": 55})
    assert response.status_code in (201, 202), response.get_json()
    now = utcnow()
    post_context(client, user, {"type": "location", "at": now - timedelta(seconds=5), "lat": 52.520008,
                                "lon": 13.404954, "accuracy_m": 10},
                 {"type": "activity", "at": now, "value": "walking"})
    response = client.post("/v1/me/help", headers=user.headers, json={"topic": "charging", "message": "where do I charge?"})
    assert response.status_code == 201, response.get_json()
    with WebhookReceiver() as receiver:
        world.register(receiver.url("/crm"), ["suggestion.created"])
        sid = sworld.propose(user, sworld.rule(f"rule of {name}"))
        run_outbox(db_app)
    sworld.feedback(user, sid, action="dismissed")
    with database.unit_of_work() as uow:  # derived rows the pipeline makes only in some situations
        uid = uuid.UUID(user.id)
        uow.session.add(TriggerRecord(user_id=uid, event="trip.approaching", fields={}, at=now,
                                      dedupe_key=f"export-test:{uid}"))
        if uow.session.get(UserGeofenceState, uid) is None:
            uow.session.add(UserGeofenceState(user_id=uid, state={}))
        uow.commit()
    return world, user


def test_the_export_holds_every_row_of_every_table_with_the_user_id(db_app):
    world, alice = live_user(db_app, "alice")
    _, bob = live_user(db_app, "bob")
    document = export(world.client, alice)
    sections = table_sections()

    uncovered = [table.name for table in user_tables() if table.name not in sections]
    assert uncovered == [], f"tables holding a user id but missing from the export: {uncovered}"
    with world.database.session() as session:
        for table in [*user_tables(), Base.metadata.tables["users"]]:
            column = table.c.user_id if "user_id" in table.c else table.c.id
            rows = session.execute(select(table).where(column == uuid.UUID(alice.id))).mappings().all()
            assert rows, f"the test user has no {table.name} row: the test does not prove that table's export"
            exported = []
            for name in sections[table.name]:
                value = document[name]
                exported += value if isinstance(value, list) else [value]
            assert sorted(key_of(row, table) for row in exported) == sorted(key_of(row, table) for row in rows), \
                table.name
    assert document["profile"]["id"] == alice.id and document["user_id"] == alice.id
    assert {c["purpose"] for c in document["consents"]} == {"location", "telemetry", "proactive_push",
                                                            "partner_sharing"}
    assert len(document["consent_history"]) == 4
    assert [e["type"] for e in document["location_history"]] == ["location"]
    assert [e["type"] for e in document["context_events"]] == ["activity"]
    [suggestion] = document["suggestions"]
    assert suggestion["reason"]["rule"]["name"] == "small spots before arrival"
    assert {i["kind"] for i in document["interactions"]} >= {"suggestion.created", "suggestion.pushed",
                                                             "suggestion.dismissed", "help.requested"}
    assert document["push_attempts"] and document["sharing_ledger"] and document["help_messages"]
    assert document["products"][0]["model_name"] == "fortwo alice"
    assert set(document["sections"]) == {name for names in sections.values() for name in names}

    text = world.client.get("/v1/me/export", headers=alice.headers).get_data(as_text=True)
    assert bob.id not in text and "rule of bob" not in text


def test_device_tokens_are_masked(db_app):
    world, alice = live_user(db_app, "alice")
    text = world.client.get("/v1/me/export", headers=alice.headers).get_data(as_text=True)
    assert PHONE_TOKEN not in text
    [device] = json.loads(text)["devices"]
    assert device["token"] == "****" + PHONE_TOKEN[-4:] and "token_hash" not in device
    # Not even the stored replay of the request that registered it gives the token away.
    assert PHONE_TOKEN[:-4] not in text


def test_a_big_export_is_complete(db_app):
    world = webhook_world(db_app)
    alice = world.user("alice")
    count = 3 * BATCH + 7
    with world.database.unit_of_work() as uow:
        uow.session.execute(insert(Interaction), [
            {"user_id": uuid.UUID(alice.id), "kind": "spot.searched", "channel": "api", "subject_type": None,
             "subject_id": None, "data": {"n": n, "pad": "x" * 200}, "at": utcnow()} for n in range(count)])
        uow.commit()
    document = export(world.client, alice)
    assert [i["data"]["n"] for i in document["interactions"]] == list(range(count))


def test_the_export_needs_a_user_token(db_app):
    world = webhook_world(db_app)
    assert world.client.get("/v1/me/export").status_code == 401
    assert world.client.get("/v1/me/export", headers=bearer(world.partner)).status_code == 403
