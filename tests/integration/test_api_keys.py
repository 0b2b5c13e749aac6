"""API keys managed by operators: create (shown once), list, revoke."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from smartsvc.credentials import hash_api_key
from smartsvc.models import ApiKey
from tests.support.checks import count, problem
from tests.support.factories import api_key, bearer






def test_an_operator_creates_a_key_that_works_at_once(client, app, operator_key):
    response = client.post("/v1/keys", json={"role": "app", "name": "vendor backend"}, headers=bearer(operator_key))

    assert response.status_code == 201
    body = response.get_json()
    assert body["role"] == "app"
    assert body["name"] == "vendor backend"
    assert body["key"].startswith("ssk_")
    assert body["key"].startswith(body["prefix"])
    assert body["revoked_at"] is None
    created = client.post("/v1/users", json={"external_id": "x", "time_zone": "UTC"}, headers=bearer(body["key"]))
    assert created.status_code == 201


def test_only_the_hash_is_stored_and_lists_never_show_the_key(client, app, operator_key):
    plaintext = client.post("/v1/keys", json={"role": "partner", "name": "dealer"},
                            headers=bearer(operator_key)).get_json()["key"]

    listing = client.get("/v1/keys", headers=bearer(operator_key))

    assert listing.status_code == 200
    assert plaintext not in listing.get_data(as_text=True)
    assert all("key" not in item for item in listing.get_json()["items"])
    with app.extensions["smartsvc"].database.session() as session:
        hashes = set(session.scalars(select(ApiKey.key_hash)))
    assert hash_api_key(plaintext) in hashes
    assert plaintext not in hashes


def test_a_revoked_key_is_refused_with_401_and_stays_listed(client, app, operator_key):
    created = client.post("/v1/keys", json={"role": "app", "name": "leaked"}, headers=bearer(operator_key)).get_json()
    assert client.get("/v1/users", headers=bearer(created["key"])).status_code == 200

    assert client.delete(f"/v1/keys/{created['id']}", headers=bearer(operator_key)).status_code == 204

    body = problem(client.get("/v1/users", headers=bearer(created["key"])), 401)
    assert "revoked" in body["detail"]
    shown = client.get(f"/v1/keys/{created['id']}", headers=bearer(operator_key)).get_json()
    assert shown["revoked_at"] is not None
    assert count(app, ApiKey) == 2
    # revoking again is harmless and keeps the first revocation time
    assert client.delete(f"/v1/keys/{created['id']}", headers=bearer(operator_key)).status_code == 204
    assert client.get(f"/v1/keys/{created['id']}", headers=bearer(operator_key)).get_json() == shown


def test_last_used_at_shows_when_a_key_was_used(client, operator_key, app_key):
    client.get("/v1/users", headers=bearer(app_key))

    items = client.get("/v1/keys", headers=bearer(operator_key)).get_json()["items"]

    assert all(item["last_used_at"] is not None for item in items)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"role": "admin", "name": "x"}, "role"),
        ({"role": "user", "name": "x"}, "role"),
        ({"name": "x"}, "role"),
        ({"role": "app"}, "name"),
        ({"role": "app", "name": ""}, "name"),
        ({"role": "app", "name": "   "}, "name"),
        ({"role": "app", "name": "n" * 201}, "name"),
        ({"role": "app", "name": "x", "expires": "never"}, "expires"),
        ({"role": ["app"], "name": "x"}, "role"),
    ],
)
def test_bad_key_bodies_are_422_naming_the_field_and_create_nothing(client, app, operator_key, body, field):
    problem(client.post("/v1/keys", json=body, headers=bearer(operator_key)), 422, field)

    assert count(app, ApiKey) == 1


@pytest.mark.parametrize("method", ["get", "delete"])
def test_an_unknown_key_is_404(client, operator_key, method):
    problem(getattr(client, method)(f"/v1/keys/{uuid.uuid4()}", headers=bearer(operator_key)), 404)


@pytest.mark.parametrize("role", ["app", "partner", "agent"])
def test_only_operators_manage_keys(client, app, operator_key, role):
    caller = api_key(app, role)
    operator_id = client.get("/v1/keys", headers=bearer(operator_key)).get_json()["items"][0]["id"]

    problem(client.post("/v1/keys", json={"role": "operator", "name": "escalate"}, headers=bearer(caller)), 403)
    problem(client.get("/v1/keys", headers=bearer(caller)), 403)
    problem(client.delete(f"/v1/keys/{operator_id}", headers=bearer(caller)), 403)

    assert count(app, ApiKey) == 2
    assert client.get("/v1/keys", headers=bearer(operator_key)).status_code == 200


def test_keys_page_with_cursors(client, app, operator_key):
    for n in range(4):
        api_key(app, "agent", f"agent {n}")

    first = client.get("/v1/keys?limit=3", headers=bearer(operator_key)).get_json()
    rest = client.get("/v1/keys", query_string={"limit": 3, "cursor": first["next_cursor"]},
                      headers=bearer(operator_key)).get_json()

    assert len(first["items"]) == 3 and len(rest["items"]) == 2
    assert rest["next_cursor"] is None
    assert len({k["id"] for k in first["items"] + rest["items"]}) == 5
    problem(client.get("/v1/keys?limit=1000", headers=bearer(operator_key)), 422, "limit")
