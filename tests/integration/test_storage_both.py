"""The same API flows, asserted identically on SQLite and on PostgreSQL + PostGIS.

Every test taking ``db_client`` / ``db_app`` runs twice: once on a fresh
SQLite file, once on a fresh PostgreSQL database of the throwaway server.
The migration tests prove that an empty database of either kind reaches
head and that the models and the migrations describe the same schema.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import geoalchemy2  # noqa: F401  (compare_metadata reflects PostGIS columns: their types must be known)
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select, text

from smartsvc.config import Settings
from smartsvc.db import Database
from smartsvc.migrate import POSTGIS_TABLES, alembic_config, current_revision, head_revision, outside_the_models, upgrade
from smartsvc.models import Base, OutboxMessage, ProductModel, TelemetryReading
from smartsvc.services.telemetry import PROCESS_TASK, process_reading
from tests.support.factories import TestUser as ApiUser
from tests.support.factories import api_key, bearer, grant, make_user

APP_TABLES = set(Base.metadata.tables)


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.fixture
def keys(db_app) -> dict[str, str]:
    return {role: api_key(db_app, role) for role in ("operator", "app", "partner", "agent")}


@pytest.fixture
def alice(db_client, keys) -> ApiUser:
    return make_user(db_client, keys["app"], "alice")


@pytest.fixture
def bob(db_client, keys) -> ApiUser:
    return make_user(db_client, keys["app"], "bob")


FORTWO = {
    "kind": "car", "brand": "smart", "name": "fortwo",
    "attributes": {"length_m": 2.69, "width_m": 1.66, "height_m": 1.55, "weight_kg": 1095.0,
                   "powertrain": "bev", "connectors": ["type2", "ccs"], "battery_kwh": 17.6,
                   "range_km": 133.0, "service_interval_km": 20000.0},
}


def add_model(client: Any, operator_key: str, **changes: Any) -> dict[str, Any]:
    response = client.post("/v1/catalog/models", headers=bearer(operator_key), json={**FORTWO, **changes})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


# --------------------------------------------------------------------------- users and tokens


def test_users_and_tokens(db_client, keys):
    created = db_client.post("/v1/users", headers=bearer(keys["app"]),
                             json={"external_id": "ext-1", "time_zone": "Europe/Berlin", "locale": "de-DE"})
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    assert set(body) == {"id", "access_token", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    user_id = body["id"]

    duplicate = db_client.post("/v1/users", headers=bearer(keys["operator"]),
                               json={"external_id": "ext-1", "time_zone": "UTC"})
    assert duplicate.status_code == 409
    assert duplicate.get_json()["errors"] == {"external_id": ["already exists"]}

    found = db_client.get("/v1/users", query_string={"external_id": "ext-1"}, headers=bearer(keys["app"]))
    assert found.status_code == 200
    assert [u["id"] for u in found.get_json()["items"]] == [user_id]
    assert found.get_json()["next_cursor"] is None

    read = db_client.get(f"/v1/users/{user_id}", headers=bearer(keys["operator"])).get_json()
    assert (read["external_id"], read["time_zone"], read["locale"]) == ("ext-1", "Europe/Berlin", "de-DE")
    assert parse_time(read["created_at"]).utcoffset() is not None

    fresh = db_client.post(f"/v1/users/{user_id}/tokens", headers=bearer(keys["app"]))
    assert fresh.status_code == 201
    for token in (body["access_token"], fresh.get_json()["access_token"]):
        me = db_client.get("/v1/me", headers=bearer(token))
        assert me.status_code == 200
        assert me.get_json()["id"] == user_id

    assert db_client.post(f"/v1/users/{uuid.uuid4()}/tokens", headers=bearer(keys["app"])).status_code == 404
    assert db_client.get("/v1/users", headers=bearer(body["access_token"])).status_code == 403
    assert db_client.get("/v1/users", headers=bearer(keys["partner"])).status_code == 403
    assert db_client.get("/v1/me", headers=bearer("sat_forged")).status_code == 401


def test_patch_me(db_client, alice):
    before = db_client.get("/v1/me", headers=alice.headers).get_json()
    assert before["quiet_hours"] is None and before["max_pushes_per_day"] == 3

    changed = db_client.patch("/v1/me", headers=alice.headers, json={
        "time_zone": "America/New_York", "locale": "en-US",
        "quiet_hours": {"start": "22:00", "end": "07:00"}, "max_pushes_per_day": 5,
    })
    assert changed.status_code == 200, changed.get_json()
    after = db_client.get("/v1/me", headers=alice.headers).get_json()
    assert after == changed.get_json()
    assert (after["time_zone"], after["locale"], after["max_pushes_per_day"]) == ("America/New_York", "en-US", 5)
    assert after["quiet_hours"] == {"start": "22:00", "end": "07:00"}
    assert parse_time(after["updated_at"]) >= parse_time(before["updated_at"])
    assert after["created_at"] == before["created_at"]

    cleared = db_client.patch("/v1/me", headers=alice.headers, json={"quiet_hours": None, "locale": None})
    assert cleared.status_code == 200
    assert cleared.get_json()["quiet_hours"] is None and cleared.get_json()["locale"] is None
    assert cleared.get_json()["time_zone"] == "America/New_York"

    bad = db_client.patch("/v1/me", headers=alice.headers, json={"time_zone": "Mars/Olympus"})
    assert bad.status_code == 422
    assert "time_zone" in bad.get_json()["errors"]
    assert db_client.get("/v1/me", headers=alice.headers).get_json()["time_zone"] == "America/New_York"


# --------------------------------------------------------------------------- consents


def test_consents_keep_their_history(db_client, alice, bob):
    initial = db_client.get("/v1/me/consents", headers=alice.headers).get_json()["items"]
    assert [(c["purpose"], c["granted"], c["changed_at"], c["history"]) for c in initial] == [
        (p, False, None, []) for p in ("location", "telemetry", "proactive_push", "partner_sharing")
    ]

    granted = db_client.put("/v1/me/consents/telemetry", headers=alice.headers, json={"granted": True})
    assert granted.status_code == 200
    assert granted.get_json()["granted"] is True
    again = db_client.put("/v1/me/consents/telemetry", headers=alice.headers, json={"granted": True})
    assert len(again.get_json()["history"]) == 1  # no change, no new history entry
    withdrawn = db_client.put("/v1/me/consents/telemetry", headers=alice.headers, json={"granted": False})
    assert withdrawn.get_json()["granted"] is False
    history = withdrawn.get_json()["history"]
    assert [h["granted"] for h in history] == [True, False]
    assert parse_time(history[0]["at"]) <= parse_time(history[1]["at"])
    assert parse_time(withdrawn.get_json()["changed_at"]) == parse_time(history[1]["at"])

    db_client.put("/v1/me/consents/location", headers=alice.headers, json={"granted": True})
    states = {c["purpose"]: c for c in db_client.get("/v1/me/consents", headers=alice.headers).get_json()["items"]}
    assert (states["location"]["granted"], len(states["location"]["history"])) == (True, 1)
    assert (states["telemetry"]["granted"], len(states["telemetry"]["history"])) == (False, 2)
    # Bob's consents are his own.
    assert not any(c["granted"] or c["history"]
                   for c in db_client.get("/v1/me/consents", headers=bob.headers).get_json()["items"])
    assert db_client.put("/v1/me/consents/marketing", headers=alice.headers,
                         json={"granted": True}).status_code == 404


# --------------------------------------------------------------------------- devices


def test_devices_are_deduplicated(db_client, alice, bob):
    first = db_client.post("/v1/me/devices", headers=alice.headers, json={"platform": "fcm", "token": "fcm-token-123456"})
    assert first.status_code == 201, first.get_json()
    device = first.get_json()
    assert device["token_hint"] == "…123456" and device["active"] is True
    repeat = db_client.post("/v1/me/devices", headers=alice.headers, json={"platform": "fcm", "token": "fcm-token-123456"})
    assert repeat.status_code == 200
    assert repeat.get_json()["id"] == device["id"]
    assert parse_time(repeat.get_json()["last_seen_at"]) >= parse_time(device["last_seen_at"])

    webpush = db_client.post("/v1/me/devices", headers=alice.headers, json={
        "platform": "webpush",
        "subscription": {"endpoint": "https://push.example.com/send/abc", "keys": {"p256dh": "p", "auth": "a"}},
    })
    assert webpush.status_code == 201, webpush.get_json()
    assert webpush.get_json()["endpoint_origin"] == "https://push.example.com"
    # The same token for another user is another device.
    bobs = db_client.post("/v1/me/devices", headers=bob.headers, json={"platform": "fcm", "token": "fcm-token-123456"})
    assert bobs.status_code == 201 and bobs.get_json()["id"] != device["id"]

    listed = db_client.get("/v1/me/devices", headers=alice.headers).get_json()
    assert [d["id"] for d in listed["items"]] == [device["id"], webpush.get_json()["id"]]
    assert db_client.delete(f"/v1/me/devices/{device['id']}", headers=bob.headers).status_code == 404
    assert db_client.delete(f"/v1/me/devices/{device['id']}", headers=alice.headers).status_code == 204
    assert db_client.delete(f"/v1/me/devices/{device['id']}", headers=alice.headers).status_code == 404
    listed = db_client.get("/v1/me/devices", headers=alice.headers).get_json()
    assert [d["id"] for d in listed["items"]] == [webpush.get_json()["id"]]
    assert len(db_client.get("/v1/me/devices", headers=bob.headers).get_json()["items"]) == 1


# --------------------------------------------------------------------------- products and telemetry


def test_catalogue_owned_products_and_telemetry(db_app, db_client, keys, alice, bob):
    model = add_model(db_client, keys["operator"])
    assert model["attributes"] == FORTWO["attributes"]
    add_model(db_client, keys["operator"], kind="bicycle", brand="acme", name="city", attributes={})
    cars = db_client.get("/v1/catalog/models", query_string={"kind": "car"}, headers=alice.headers).get_json()
    assert [m["id"] for m in cars["items"]] == [model["id"]]
    assert db_client.get(f"/v1/catalog/models/{model['id']}", headers=bearer(keys["partner"])).get_json() == model
    assert db_client.post("/v1/catalog/models", headers=bearer(keys["app"]), json=FORTWO).status_code == 403

    owned = db_client.post("/v1/me/products", headers=alice.headers, json={"model_id": model["id"], "nickname": "Fritz"})
    assert owned.status_code == 201, owned.get_json()
    product = owned.get_json()
    assert (product["nickname"], product["model"], product["latest_telemetry"]) == ("Fritz", model, {})
    product_id = product["id"]
    assert [p["id"] for p in db_client.get("/v1/me/products", headers=alice.headers).get_json()["items"]] == [product_id]
    assert db_client.get(f"/v1/me/products/{product_id}", headers=bob.headers).status_code == 404
    unknown_model = db_client.post("/v1/me/products", headers=alice.headers, json={"model_id": str(uuid.uuid4())})
    assert unknown_model.status_code == 422 and "model_id" in unknown_model.get_json()["errors"]

    reading = {"at": "2026-11-24T10:00:00+01:00", "odometer_km": 12345.5, "battery_pct": 40,
               "service_due_at": "2027-03-01T00:00:00+00:00", "tire_pressure_bar": [2.1, 2.1, 2.3, 2.3]}
    assert db_client.post(f"/v1/me/products/{product_id}/telemetry", headers=alice.headers,
                          json=reading).status_code == 403  # no consent yet
    grant(db_client, alice, "telemetry")
    accepted = db_client.post(f"/v1/me/products/{product_id}/telemetry", headers=alice.headers, json=reading)
    assert accepted.status_code == 202, accepted.get_json()
    reading_id = accepted.get_json()["id"]
    assert db_client.post(f"/v1/me/products/{product_id}/telemetry", headers=bob.headers,
                          json=reading).status_code == 404

    stored = db_client.get(f"/v1/me/products/{product_id}/telemetry", headers=alice.headers).get_json()["items"]
    assert len(stored) == 1
    assert parse_time(stored[0]["at"]) == parse_time(reading["at"])
    assert parse_time(stored[0]["service_due_at"]) == parse_time(reading["service_due_at"])
    assert (stored[0]["odometer_km"], stored[0]["battery_pct"], stored[0]["fuel_pct"]) == (12345.5, 40, None)
    assert stored[0]["tire_pressure_bar"] == [2.1, 2.1, 2.3, 2.3]
    assert stored[0]["processed_at"] is None

    # The processing was enqueued in the reading's transaction; run it here (the worker tests run it for real).
    database = db_app.extensions["smartsvc"].database
    with database.session() as session:
        message = session.scalars(select(OutboxMessage).where(OutboxMessage.task == PROCESS_TASK)).one()
    assert message.payload == {"reading_id": reading_id}
    assert message.ordering_key == f"user:{alice.id}" and str(message.user_id) == alice.id
    assert process_reading(database, uuid.UUID(reading_id), message.id) is True
    with database.session() as session:
        assert session.get(OutboxMessage, message.id).completed_at is not None

    latest = db_client.get(f"/v1/me/products/{product_id}", headers=alice.headers)
    assert latest.status_code == 200, latest.get_json()
    folded = latest.get_json()["latest_telemetry"]
    assert set(folded) == {"odometer_km", "battery_pct", "service_due_at", "tire_pressure_bar"}
    assert folded["battery_pct"]["value"] == 40
    assert folded["tire_pressure_bar"]["value"] == [2.1, 2.1, 2.3, 2.3]
    assert parse_time(folded["service_due_at"]["value"]) == parse_time(reading["service_due_at"])
    assert all(parse_time(v["at"]) == parse_time(reading["at"]) for v in folded.values())

    assert db_client.delete(f"/v1/me/products/{product_id}", headers=bob.headers).status_code == 404
    assert db_client.delete(f"/v1/me/products/{product_id}", headers=alice.headers).status_code == 204
    assert db_client.get(f"/v1/me/products/{product_id}", headers=alice.headers).status_code == 404
    with database.session() as session:
        assert session.scalars(select(TelemetryReading)).all() == []  # removed with the product


# --------------------------------------------------------------------------- keys


def test_keys_lifecycle(db_client, keys):
    operator = bearer(keys["operator"])
    created = db_client.post("/v1/keys", headers=operator, json={"role": "partner", "name": "ACME parking"})
    assert created.status_code == 201, created.get_json()
    key = created.get_json()
    assert key["key"].startswith(key["prefix"]) and key["revoked_at"] is None

    assert db_client.get("/v1/catalog/models", headers=bearer(key["key"])).status_code == 200
    listed = db_client.get("/v1/keys", headers=operator).get_json()["items"]
    assert key["id"] in [k["id"] for k in listed]
    assert all("key" not in k for k in listed)
    assert db_client.get(f"/v1/keys/{key['id']}", headers=operator).get_json()["last_used_at"] is not None
    assert db_client.get("/v1/keys", headers=bearer(key["key"])).status_code == 403

    assert db_client.delete(f"/v1/keys/{key['id']}", headers=operator).status_code == 204
    assert db_client.get("/v1/catalog/models", headers=bearer(key["key"])).status_code == 401
    assert db_client.get(f"/v1/keys/{key['id']}", headers=operator).get_json()["revoked_at"] is not None
    assert db_client.delete(f"/v1/keys/{uuid.uuid4()}", headers=operator).status_code == 404


# --------------------------------------------------------------------------- pagination and idempotency


def collect_pages(client: Any, path: str, headers: dict[str, str], limit: int) -> list[list[dict[str, Any]]]:
    pages, cursor = [], None
    while True:
        query = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        response = client.get(path, query_string=query, headers=headers)
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 50, "pagination does not end"


def test_cursor_pagination(db_client, keys, alice):
    operator = bearer(keys["operator"])
    created = [add_model(db_client, keys["operator"], name=f"model {i}")["id"] for i in range(7)]
    pages = collect_pages(db_client, "/v1/catalog/models", operator, limit=3)
    assert [len(page) for page in pages] == [3, 3, 1]
    ids = [m["id"] for page in pages for m in page]
    assert sorted(ids) == sorted(created)
    assert ids == sorted(ids, key=lambda i: uuid.UUID(i).int)  # keyset order: by time-ordered id

    # Exactly `limit` items: one full page and no cursor.
    assert [len(p) for p in collect_pages(db_client, "/v1/catalog/models", operator, limit=7)] == [7]

    product = db_client.post("/v1/me/products", headers=alice.headers, json={"model_id": created[0]}).get_json()
    grant(db_client, alice, "telemetry")
    for minute in range(5):
        db_client.post(f"/v1/me/products/{product['id']}/telemetry", headers=alice.headers,
                       json={"at": f"2026-11-24T10:0{minute}:00+00:00", "battery_pct": 50 + minute})
    pages = collect_pages(db_client, f"/v1/me/products/{product['id']}/telemetry", alice.headers, limit=2)
    assert [len(page) for page in pages] == [2, 2, 1]
    assert sorted(r["battery_pct"] for page in pages for r in page) == [50, 51, 52, 53, 54]

    users = collect_pages(db_client, "/v1/users", bearer(keys["app"]), limit=1)
    assert [u["id"] for page in users for u in page] == [alice.id]

    bad = db_client.get("/v1/catalog/models", query_string={"cursor": "not-a-cursor"}, headers=operator)
    assert bad.status_code == 422 and "cursor" in bad.get_json()["errors"]


def test_idempotency_key_replays_the_first_answer(db_app, db_client, keys, alice):
    operator = {**bearer(keys["operator"]), "Idempotency-Key": "model-1"}
    first = db_client.post("/v1/catalog/models", headers=operator, json=FORTWO)
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    replay = db_client.post("/v1/catalog/models", headers=operator, json=FORTWO)
    assert replay.status_code == 201
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.get_json() == first.get_json()
    with db_app.extensions["smartsvc"].database.session() as session:
        assert len(session.scalars(select(ProductModel)).all()) == 1
    other_body = db_client.post("/v1/catalog/models", headers=operator, json={**FORTWO, "name": "forfour"})
    assert other_body.status_code == 422 and "Idempotency-Key" in other_body.get_json()["errors"]
    # Keys are per caller: the same key from someone else is a new request.
    other_caller = {**bearer(api_key(db_app, "operator")), "Idempotency-Key": "model-1"}
    assert db_client.post("/v1/catalog/models", headers=other_caller, json=FORTWO).get_json()["id"] != first.get_json()["id"]

    app_headers = {**bearer(keys["app"]), "Idempotency-Key": "user-carol"}
    carol = db_client.post("/v1/users", headers=app_headers, json={"external_id": "carol", "time_zone": "UTC"})
    assert carol.status_code == 201
    carol_again = db_client.post("/v1/users", headers=app_headers, json={"external_id": "carol", "time_zone": "UTC"})
    assert carol_again.status_code == 201 and carol_again.headers["Idempotent-Replayed"] == "true"
    assert carol_again.get_json()["id"] == carol.get_json()["id"]
    # The access token is never stored: the replay carries a fresh, working one.
    assert db_client.get("/v1/me", headers=bearer(carol_again.get_json()["access_token"])).get_json()["id"] == carol.get_json()["id"]

    own = {**alice.headers, "Idempotency-Key": "product-1"}
    product = db_client.post("/v1/me/products", headers=own, json={"model_id": first.get_json()["id"]})
    product_again = db_client.post("/v1/me/products", headers=own, json={"model_id": first.get_json()["id"]})
    assert product.status_code == product_again.status_code == 201
    assert product_again.get_json() == product.get_json()
    assert len(db_client.get("/v1/me/products", headers=alice.headers).get_json()["items"]) == 1


# --------------------------------------------------------------------------- migrations


@pytest.fixture
def empty_database(backend: str, tmp_path: Path, request: pytest.FixtureRequest):
    """A database of ``backend`` with nothing in it (no tables, no PostGIS)."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'empty.db'}"
    else:
        url = request.getfixturevalue("postgres_databases").new(template="template0", prefix="empty")
    database = Database(Settings(var_dir=tmp_path, database_url=url))
    try:
        yield database
    finally:
        database.engine.dispose()


def _tables(database: Database) -> set[str]:
    with database.engine.connect() as connection:
        return set(inspect(connection).get_table_names()) - POSTGIS_TABLES


def _include(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
    """Leave out what PostGIS itself creates and our PostgreSQL-only spatial column."""
    return not outside_the_models(name, type_)


def _differences(database: Database) -> list[Any]:
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={
            "compare_type": True, "include_name": _include, "target_metadata": Base.metadata,
        })
        return compare_metadata(context, Base.metadata)


def test_migrations_from_empty_reach_head_and_back(empty_database):
    assert current_revision(empty_database) is None
    assert _tables(empty_database) == set()

    upgrade(empty_database)
    assert current_revision(empty_database) == head_revision()
    assert _tables(empty_database) == APP_TABLES | {"alembic_version"}
    if empty_database.engine.dialect.name == "postgresql":
        with empty_database.engine.connect() as connection:
            assert connection.scalar(text("SELECT extname FROM pg_extension WHERE extname = 'postgis'")) == "postgis"
            assert connection.scalar(text("SELECT ST_AsText(ST_MakePoint(13.4, 52.5))")) == "POINT(13.4 52.5)"
    upgrade(empty_database)  # a second run is a no-op
    assert current_revision(empty_database) == head_revision()

    config = alembic_config()
    with empty_database.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
    assert _tables(empty_database) == {"alembic_version"}
    upgrade(empty_database)
    assert current_revision(empty_database) == head_revision()


def test_models_match_migrations(empty_database):
    upgrade(empty_database)
    assert _differences(empty_database) == []


def test_partial_indexes_of_the_models_are_partial_after_the_migrations(empty_database):
    """``compare_metadata`` does not compare an index's WHERE: each partial index of the models is checked here,
    as the migrations leave it."""
    upgrade(empty_database)
    dialect = empty_database.engine.dialect.name
    wanted = {index.name: str(index.dialect_options[dialect]["where"])
              for table in Base.metadata.tables.values() for index in table.indexes
              if index.dialect_options[dialect]["where"] is not None}
    assert {f"ix_webhook_deliveries_webhook_id_{column}" for column in ("sending_since", "waiting_since")} <= set(wanted)
    query = ("SELECT indexname, indexdef FROM pg_indexes" if dialect == "postgresql"
             else "SELECT name, sql FROM sqlite_master WHERE type = 'index'")
    with empty_database.engine.connect() as connection:
        found = {name: " ".join((sql or "").replace("(", " ").replace(")", " ").split())
                 for name, sql in connection.execute(text(query))}
    for name, where in wanted.items():
        assert f"WHERE {where}" in found.get(name, ""), (name, found.get(name))
