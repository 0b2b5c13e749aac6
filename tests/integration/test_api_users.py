"""Users, their tokens and the caller's profile: POST /v1/users, /v1/users/{id}, /v1/me."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from smartsvc.models import IdempotencyRecord, User
from smartsvc.timeutil import utcnow
from tests.support.checks import count, problem
from tests.support.factories import api_key, bearer, make_app, make_settings, make_user






def create(client, key, **body):
    payload = {"external_id": "ext-1", "time_zone": "Europe/Berlin", **body}
    return client.post("/v1/users", json=payload, headers=bearer(key))


# --- POST /v1/users ---------------------------------------------------------------------------

def test_creating_a_user_returns_id_and_a_working_token(client, app_key):
    response = create(client, app_key, external_id="vendor-42", locale="de-DE")

    assert response.status_code == 201
    body = response.get_json()
    assert set(body) >= {"id", "access_token", "expires_in"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    me = client.get("/v1/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200
    assert me.get_json()["id"] == body["id"]
    assert me.get_json()["external_id"] == "vendor-42"
    assert me.get_json()["locale"] == "de-DE"
    assert me.get_json()["time_zone"] == "Europe/Berlin"


def test_an_operator_can_create_users_too(client, operator_key):
    assert create(client, operator_key).status_code == 201


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"external_id": "x", "time_zone": "Europe/Berlin", "timezone": "UTC"}, "timezone"),
        ({"time_zone": "Europe/Berlin"}, "external_id"),
        ({"external_id": "x"}, "time_zone"),
        ({"external_id": 42, "time_zone": "Europe/Berlin"}, "external_id"),
        ({"external_id": "", "time_zone": "Europe/Berlin"}, "external_id"),
        ({"external_id": "x" * 201, "time_zone": "Europe/Berlin"}, "external_id"),
        ({"external_id": "x", "time_zone": ["Europe/Berlin"]}, "time_zone"),
        ({"external_id": "x", "time_zone": "Mars/Olympus_Mons"}, "time_zone"),
        ({"external_id": "x", "time_zone": "CEST+1"}, "time_zone"),
        ({"external_id": "x", "time_zone": "Europe/Berlin", "locale": "German!"}, "locale"),
        ({"external_id": None, "time_zone": "Europe/Berlin"}, "external_id"),
    ],
)
def test_bad_user_bodies_are_422_naming_the_field_and_create_nothing(client, app, app_key, body, field):
    response = client.post("/v1/users", json=body, headers=bearer(app_key))

    problem(response, 422, field)
    assert count(app, User) == 0


def test_an_invalid_time_zone_says_what_is_expected(client, app_key):
    body = problem(create(client, app_key, time_zone="Berlin"), 422, "time_zone")

    assert "IANA" in body["errors"]["time_zone"][0]


def test_a_duplicate_external_id_is_409_and_leaves_one_user(client, app, app_key):
    assert create(client, app_key, external_id="same").status_code == 201

    body = problem(create(client, app_key, external_id="same"), 409, "external_id")

    assert "already exists" in body["detail"]
    assert count(app, User) == 1


@pytest.mark.parametrize("role", ["partner", "agent"])
def test_partner_and_agent_keys_cannot_create_users(client, app, role):
    problem(create(client, api_key(app, role)), 403)
    assert count(app, User) == 0


def test_a_user_token_cannot_create_users(client, app, user):
    problem(create(client, user.token, external_id="sneaky"), 403)
    assert count(app, User) == 1


# --- Idempotency-Key on POST /v1/users ---------------------------------------------------------

def test_a_repeated_idempotency_key_returns_the_same_user_with_a_fresh_working_token(client, app, app_key):
    headers = {**bearer(app_key), "Idempotency-Key": "create-alice-1"}
    payload = {"external_id": "alice", "time_zone": "Europe/Berlin"}

    first = client.post("/v1/users", json=payload, headers=headers)
    again = client.post("/v1/users", json=payload, headers=headers)

    assert first.status_code == again.status_code == 201
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.get_json()["expires_in"] == 3600
    replayed_token = again.get_json()["access_token"]
    me = client.get("/v1/me", headers=bearer(replayed_token))
    assert me.status_code == 200 and me.get_json()["id"] == first.get_json()["id"]
    assert count(app, User) == 1


def test_the_access_token_itself_is_never_stored_for_replay(client, app, app_key):
    response = client.post("/v1/users", json={"external_id": "a", "time_zone": "UTC"},
                           headers={**bearer(app_key), "Idempotency-Key": "k1"})
    token = response.get_json()["access_token"]

    with app.extensions["smartsvc"].database.session() as session:
        stored = session.scalars(select(IdempotencyRecord.response_body)).all()
    assert len(stored) == 1
    assert "access_token" not in stored[0]
    assert token not in str(stored[0])


def test_reusing_an_idempotency_key_with_another_body_is_422_naming_the_header(client, app, app_key):
    headers = {**bearer(app_key), "Idempotency-Key": "create-1"}
    assert client.post("/v1/users", json={"external_id": "a", "time_zone": "UTC"}, headers=headers).status_code == 201

    response = client.post("/v1/users", json={"external_id": "b", "time_zone": "UTC"}, headers=headers)

    problem(response, 422, "Idempotency-Key")
    assert count(app, User) == 1


def test_idempotency_keys_are_per_caller(client, app, app_key):
    other_key = api_key(app, "app", "another vendor server")
    first = client.post("/v1/users", json={"external_id": "a", "time_zone": "UTC"},
                        headers={**bearer(app_key), "Idempotency-Key": "same"})
    second = client.post("/v1/users", json={"external_id": "b", "time_zone": "UTC"},
                         headers={**bearer(other_key), "Idempotency-Key": "same"})

    assert first.status_code == second.status_code == 201
    assert first.get_json()["id"] != second.get_json()["id"]
    assert count(app, User) == 2


def test_a_failed_request_does_not_use_up_its_idempotency_key(client, app, app_key):
    headers = {**bearer(app_key), "Idempotency-Key": "retry-me"}
    problem(client.post("/v1/users", json={"external_id": "a", "time_zone": "Nowhere"}, headers=headers),
            422, "time_zone")

    fixed = client.post("/v1/users", json={"external_id": "a", "time_zone": "UTC"}, headers=headers)

    assert fixed.status_code == 201
    assert count(app, User) == 1


def test_an_idempotency_key_older_than_24_hours_starts_afresh(client, app, app_key):
    headers = {**bearer(app_key), "Idempotency-Key": "daily-sync"}
    first = client.post("/v1/users", json={"external_id": "a", "time_zone": "UTC"}, headers=headers)
    with app.extensions["smartsvc"].database.unit_of_work() as uow:
        uow.session.execute(update(IdempotencyRecord).values(created_at=utcnow() - timedelta(hours=25)))
        uow.commit()

    later = client.post("/v1/users", json={"external_id": "b", "time_zone": "UTC"}, headers=headers)

    assert later.status_code == 201
    assert later.get_json()["id"] != first.get_json()["id"]
    assert "Idempotent-Replayed" not in later.headers
    assert count(app, User) == 2


@pytest.mark.parametrize("key", ["", "k" * 201])
def test_an_unusable_idempotency_key_is_422_naming_the_header(client, app, app_key, key):
    response = client.post("/v1/users", json={"external_id": "a", "time_zone": "UTC"},
                           headers={**bearer(app_key), "Idempotency-Key": key})

    problem(response, 422, "Idempotency-Key")
    assert count(app, User) == 0


# --- GET /v1/users, /v1/users/{id}, POST /v1/users/{id}/tokens ---------------------------------

def test_read_a_user_by_id(client, app_key, user):
    response = client.get(f"/v1/users/{user.id}", headers=bearer(app_key))

    assert response.status_code == 200
    assert response.get_json()["external_id"] == "alice"


@pytest.mark.parametrize("path", [f"/v1/users/{uuid.uuid4()}", f"/v1/users/{uuid.uuid4()}/tokens"])
def test_unknown_user_ids_are_404(client, app_key, path):
    method = client.post if path.endswith("/tokens") else client.get
    problem(method(path, headers=bearer(app_key)), 404)


def test_a_malformed_user_id_is_404_not_500(client, app_key):
    problem(client.get("/v1/users/not-a-uuid", headers=bearer(app_key)), 404)


def test_find_a_user_by_external_id(client, app_key, user, other_user):
    response = client.get("/v1/users", query_string={"external_id": "bob"}, headers=bearer(app_key))

    assert response.status_code == 200
    assert [u["id"] for u in response.get_json()["items"]] == [other_user.id]
    missing = client.get("/v1/users", query_string={"external_id": "nobody"}, headers=bearer(app_key))
    assert missing.get_json() == {"items": [], "next_cursor": None}


def test_a_fresh_token_works_and_the_old_one_keeps_working(client, app_key, user):
    response = client.post(f"/v1/users/{user.id}/tokens", headers=bearer(app_key))

    assert response.status_code == 201
    body = response.get_json()
    assert body["id"] == user.id
    assert client.get("/v1/me", headers=bearer(body["access_token"])).get_json()["id"] == user.id
    assert client.get("/v1/me", headers=user.headers).status_code == 200


def test_the_user_list_pages_with_cursors(client, app_key):
    created = [make_user(client, app_key, f"user-{i}").id for i in range(5)]

    seen, cursor, pages = [], None, 0
    while True:
        query = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/users", query_string=query, headers=bearer(app_key)).get_json()
        pages += 1
        assert len(page["items"]) <= 2
        seen += [u["id"] for u in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == created  # creation order, nothing twice, nothing missed
    assert pages == 3


@pytest.mark.parametrize(("query", "field"), [
    ({"limit": 501}, "limit"), ({"limit": 0}, "limit"), ({"limit": "ten"}, "limit"),
    ({"cursor": "not-a-cursor"}, "cursor"), ({"cursor": "c" * 101}, "cursor"),
])
def test_bad_list_parameters_are_422_naming_them(client, app_key, query, field):
    problem(client.get("/v1/users", query_string=query, headers=bearer(app_key)), 422, field)


def test_limit_500_is_allowed(client, app_key, user):
    assert client.get("/v1/users?limit=500", headers=bearer(app_key)).status_code == 200


# --- GET/PATCH /v1/me ------------------------------------------------------------------------

def test_me_shows_the_profile_with_defaults(client, user):
    body = client.get("/v1/me", headers=user.headers).get_json()

    assert body["id"] == user.id
    assert body["quiet_hours"] is None
    assert body["max_pushes_per_day"] == 3
    assert body["locale"] is None


def test_patch_me_changes_only_what_is_sent(client, user):
    response = client.patch("/v1/me", headers=user.headers, json={
        "time_zone": "America/New_York", "quiet_hours": {"start": "22:00", "end": "07:00"},
        "max_pushes_per_day": 5,
    })

    assert response.status_code == 200
    body = client.get("/v1/me", headers=user.headers).get_json()
    assert body["time_zone"] == "America/New_York"
    assert body["quiet_hours"] == {"start": "22:00", "end": "07:00"}
    assert body["max_pushes_per_day"] == 5
    assert body["external_id"] == "alice"

    cleared = client.patch("/v1/me", headers=user.headers, json={"quiet_hours": None, "locale": "fr"})
    assert cleared.get_json()["quiet_hours"] is None
    assert cleared.get_json()["locale"] == "fr"
    assert cleared.get_json()["time_zone"] == "America/New_York"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"time_zone": "Atlantis/Capital"}, "time_zone"),
        ({"time_zone": 1}, "time_zone"),
        ({"quiet_hours": {"start": "25:00", "end": "07:00"}}, "quiet_hours.start"),
        ({"quiet_hours": {"start": "22:00"}}, "quiet_hours.end"),
        ({"quiet_hours": {"start": "22:00", "end": "7"}}, "quiet_hours.end"),
        ({"quiet_hours": "22-07"}, "quiet_hours"),
        ({"max_pushes_per_day": 51}, "max_pushes_per_day"),
        ({"max_pushes_per_day": -1}, "max_pushes_per_day"),
        ({"max_pushes_per_day": "lots"}, "max_pushes_per_day"),
        ({"external_id": "renamed"}, "external_id"),
        ({"quiet_hour": {"start": "22:00", "end": "07:00"}}, "quiet_hour"),
    ],
)
def test_bad_profile_changes_are_422_naming_the_field_and_change_nothing(client, user, body, field):
    before = client.get("/v1/me", headers=user.headers).get_json()
    # a valid change sent alongside the bad one must not be applied either
    response = client.patch("/v1/me", headers=user.headers, json={"locale": "it-IT", **body})

    problem(response, 422, field)
    assert client.get("/v1/me", headers=user.headers).get_json() == before


def test_a_user_token_cannot_read_users_by_id(client, user, other_user):
    problem(client.get(f"/v1/users/{other_user.id}", headers=user.headers), 403)
    problem(client.post(f"/v1/users/{other_user.id}/tokens", headers=user.headers), 403)


def test_me_requires_a_user_token(client, app_key):
    body = problem(client.get("/v1/me", headers=bearer(app_key)), 403)

    assert "user access token" in body["detail"]


def test_tokens_live_as_long_as_configured(tmp_path):
    app = make_app(make_settings(tmp_path / "var", access_token_ttl_s=120))
    client = app.test_client()

    response = create(client, api_key(app, "app"))

    assert response.get_json()["expires_in"] == 120
