"""One error shape everywhere: problem+json, request ids, 400/401/404/405/413/422/429/500."""

from __future__ import annotations

import time
import uuid

import pytest
from itsdangerous import TimestampSigner

from smartsvc.credentials import AccessTokens
from smartsvc.models import Device, User
from smartsvc.services import users as users_service
from tests.support.checks import count, problem
from tests.support.factories import api_key, bearer, make_app, make_settings, make_user






# --- routes and request ids ------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/nope", "/v1", "/v1/user", "/v2/users", "/v1/me/products/not-a-uuid"])
def test_an_unknown_route_is_a_404_problem(client, path):
    body = problem(client.get(path), 404)

    assert body["title"] == "Not Found"


def test_a_wrong_method_is_405_with_allow(client, app_key):
    problem(client.delete("/v1/users", headers=bearer(app_key)), 405)

    response = client.put("/v1/health")
    assert set(response.headers["Allow"].replace(" ", "").split(",")) >= {"GET"}


def test_the_callers_request_id_is_echoed_and_quoted_in_problems(client):
    response = client.get("/nope", headers={"X-Request-Id": "mobile-7f3a.42:retry-1"})

    assert response.headers["X-Request-Id"] == "mobile-7f3a.42:retry-1"
    assert problem(response, 404)["request_id"] == "mobile-7f3a.42:retry-1"
    assert client.get("/v1/health", headers={"X-Request-Id": "ok-1"}).headers["X-Request-Id"] == "ok-1"


@pytest.mark.parametrize("incoming", ["has spaces", "x" * 101, "<script>", "ünïcode"])
def test_an_unsafe_request_id_is_replaced_by_our_own(client, incoming):
    response = client.get("/nope", headers={"X-Request-Id": incoming.encode("utf-8").decode("latin-1")})

    request_id = response.headers["X-Request-Id"]
    assert request_id and request_id != incoming
    assert problem(response, 404)["request_id"] == request_id


def test_every_request_gets_its_own_id(client):
    ids = {client.get("/v1/health").headers["X-Request-Id"] for _ in range(5)}

    assert len(ids) == 5


# --- bodies ----------------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [b"{bad json", b'{"external_id": "a",}', b"\xff\xfe{", b"'single'"])
def test_invalid_json_is_400_naming_the_body_and_stores_nothing(client, app, app_key, raw):
    response = client.post("/v1/users", data=raw, content_type="application/json", headers=bearer(app_key))

    problem(response, 400, "body")
    assert count(app, User) == 0


@pytest.mark.parametrize("payload", [[], [{"external_id": "a"}], "text", 42, None, True])
def test_a_body_that_is_not_an_object_is_422(client, app, app_key, payload):
    response = client.post("/v1/users", json=payload, headers=bearer(app_key))

    assert response.status_code in (400, 422)
    problem(response, response.status_code)
    assert count(app, User) == 0


@pytest.mark.parametrize("raw", [b"[" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
                                 b'{"external_id": ' + b"[" * 65 + b"]" * 65 + b', "time_zone": "UTC"}'])
def test_absurdly_deep_json_is_400_naming_the_body_not_a_500(client, app, app_key, raw):
    response = client.post("/v1/users", data=raw, content_type="application/json", headers=bearer(app_key))

    body = problem(response, 400, "body")
    assert "nested" in body["errors"]["body"][0]
    assert count(app, User) == 0


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"external_id": "a\\u0000b", "time_zone": "UTC"}', "external_id"),
        (b'{"external_id": "a\\ud800", "time_zone": "UTC"}', "external_id"),
        (b'{"external_id": "a", "time_zone": "UTC", "locale": "de\\udfff"}', "locale"),
    ],
)
def test_text_no_database_can_store_is_422_naming_the_field(client, app, app_key, raw, field):
    response = client.post("/v1/users", data=raw, content_type="application/json", headers=bearer(app_key))

    problem(response, 422, field)
    assert count(app, User) == 0


def test_unstorable_text_deep_in_a_body_is_named_by_its_path(client, operator_key):
    response = client.post("/v1/catalog/models", headers=bearer(operator_key), json={
        "kind": "car", "brand": "b", "name": "n", "attributes": {"connectors": ["type2", "ccs\u0000"]}})

    problem(response, 422, "attributes.connectors.1")


def test_a_nul_in_a_query_parameter_is_422_naming_it(client, app_key):
    problem(client.get("/v1/users?external_id=a%00b", headers=bearer(app_key)), 422, "external_id")


def test_a_body_over_the_limit_is_413_and_stores_nothing(tmp_path):
    app = make_app(make_settings(tmp_path / "var", max_body_bytes=1024))
    client = app.test_client()
    key = api_key(app, "app")
    user = make_user(client, key, "small")

    big_user = client.post("/v1/users", json={"external_id": "x" * 2000, "time_zone": "UTC"}, headers=bearer(key))
    big_device = client.post("/v1/me/devices", json={"platform": "fcm", "token": "t" * 2000}, headers=user.headers)

    for response in (big_user, big_device):
        body = problem(response, 413)
        assert "larger than the limit" in body["detail"]
    assert count(app, User) == 1
    assert count(app, Device) == 0
    # just under the limit is fine
    fits = client.post("/v1/me/devices", json={"platform": "fcm", "token": "t" * 900}, headers=user.headers)
    assert fits.status_code == 201


def test_an_unknown_field_is_rejected_not_ignored(client, user):
    body = problem(client.patch("/v1/me", json={"timezone": "Europe/Paris"}, headers=user.headers), 422, "timezone")

    assert "Unknown field" in body["errors"]["timezone"][0]
    assert body["title"] == "Unprocessable Content"  # the same title as use-case validation errors
    assert client.get("/v1/me", headers=user.headers).get_json()["time_zone"] == "Europe/Berlin"


WRITES = [
    ("post", "/v1/users", "app"),
    ("post", "/v1/users/{user}/tokens", "app"),
    ("patch", "/v1/me", "user"),
    ("put", "/v1/me/consents/location", "user"),
    ("post", "/v1/me/devices", "user"),
    ("post", "/v1/catalog/models", "operator"),
    ("post", "/v1/me/products", "user"),
    ("post", "/v1/me/products/{product}/telemetry", "user"),
    ("post", "/v1/keys", "operator"),
]
ODD_BODIES = [
    None, 0, -1, 1e308, "", "x" * 5000, [], [None], {}, {"": None}, {"a": {"b": {"c": {"d": [[[[]]]]}}}},
    {"external_id": {"$ne": None}, "time_zone": ["UTC"]}, {"platform": None, "token": None},
    {"granted": [], "model_id": {}, "at": 1, "kind": 3.5, "role": None, "name": []},
    {"time_zone": "../../etc/passwd", "locale": "\u0000"}, {"quiet_hours": {"start": None, "end": []}},
    {"attributes": {"length_m": 1e308}, "kind": "car", "brand": "b", "name": "n"},
]


def test_odd_bodies_never_cause_a_500(client, app, operator_key, app_key, user):
    model = client.post("/v1/catalog/models", json={"kind": "car", "brand": "b", "name": "n"},
                        headers=bearer(operator_key)).get_json()
    product = client.post("/v1/me/products", json={"model_id": model["id"]}, headers=user.headers).get_json()
    tokens = {"app": app_key, "operator": operator_key, "user": user.token}
    statuses = set()
    for method, path, role in WRITES:
        url = path.format(user=user.id, product=product["id"])
        for payload in ODD_BODIES:
            response = getattr(client, method)(url, json=payload, headers=bearer(tokens[role]))
            assert response.status_code < 500, (method, url, payload, response.get_data(as_text=True))
            if response.status_code >= 400:
                problem(response, response.status_code)
            statuses.add(response.status_code)
        raw = getattr(client, method)(url, data=b"\x00\x01garbage", content_type="application/json",
                                      headers=bearer(tokens[role]))
        assert raw.status_code < 500
        if raw.status_code >= 400:
            problem(raw, raw.status_code)
    assert 422 in statuses


# Valid ISO times whose UTC form falls outside the years 1-9999: Python cannot represent them, and they
# failed when stored or compared (schemathesis found the first in POST /v1/webhooks/{id}/recover).
@pytest.mark.parametrize("moment", ["0001-01-01T00:30:00+01:01", "9999-12-31T23:30:00-01:00"])
def test_a_time_without_a_utc_equivalent_is_422_naming_the_field(client, operator_key, user, moment):
    model = client.post("/v1/catalog/models", json={"kind": "car", "brand": "b", "name": "n"},
                        headers=bearer(operator_key)).get_json()
    product = client.post("/v1/me/products", json={"model_id": model["id"]}, headers=user.headers).get_json()
    telemetry = f"/v1/me/products/{product['id']}/telemetry"

    problem(client.post(telemetry, json={"at": moment, "odometer_km": 1}, headers=user.headers), 422, "at")
    problem(client.post(telemetry, json={"at": "2026-01-01T00:00:00Z", "service_due_at": moment},
                        headers=user.headers), 422, "service_due_at")
    problem(client.get("/v1/me/interactions", query_string={"since": moment}, headers=user.headers), 422, "since")
    problem(client.post(f"/v1/webhooks/{uuid.uuid4()}/recover", json={"since": moment},
                        headers=bearer(operator_key)), 422, "since")


def test_an_unexpected_failure_is_a_500_problem_without_internals(client, app_key, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("password=hunter2 at db.internal:5432")

    monkeypatch.setattr(users_service, "list_users", broken)

    response = client.get("/v1/users", headers=bearer(app_key))

    body = problem(response, 500)
    assert "hunter2" not in response.get_data(as_text=True)
    assert "RuntimeError" not in response.get_data(as_text=True)
    assert "request_id" in body["detail"]


# --- authentication ------------------------------------------------------------------------

@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token ssk_abc", "ssk_abc"],
)
def test_a_missing_or_malformed_authorization_header_is_401(client, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}

    response = client.get("/v1/me", headers=headers)

    problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "token",
    ["ssk_" + "a" * 43, "random-garbage", "sat_garbage", "sat_" + "x" * 300, "k" * 5000],
)
def test_an_unknown_credential_is_401(client, token):
    problem(client.get("/v1/me", headers=bearer(token)), 401)
    problem(client.get("/v1/users", headers=bearer(token)), 401)


def test_a_tampered_user_token_is_401(client, user):
    tampered = user.token[:-4] + ("AAAA" if not user.token.endswith("AAAA") else "BBBB")

    problem(client.get("/v1/me", headers=bearer(tampered)), 401)


def test_a_user_token_signed_with_another_secret_is_401(client, user):
    forged = AccessTokens("another-secret-0123456789abcdef0123456789", 3600).issue(uuid.UUID(user.id), 0)

    problem(client.get("/v1/me", headers=bearer(forged)), 401)


def test_an_expired_user_token_is_401_saying_so(client, app, user, monkeypatch):
    tokens = app.extensions["smartsvc"].tokens
    issued_at = int(time.time()) - tokens.ttl_s - 5
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: issued_at)
    expired = tokens.issue(uuid.UUID(user.id), 0)
    monkeypatch.undo()

    body = problem(client.get("/v1/me", headers=bearer(expired)), 401)

    assert "expired" in body["detail"]


def test_a_token_for_a_user_that_does_not_exist_is_401(client, app):
    orphan = app.extensions["smartsvc"].tokens.issue(uuid.uuid4(), 0)

    problem(client.get("/v1/me", headers=bearer(orphan)), 401)


def test_a_revoked_api_key_is_401(client, app, operator_key):
    created = client.post("/v1/keys", json={"role": "app", "name": "old"}, headers=bearer(operator_key)).get_json()
    client.delete(f"/v1/keys/{created['id']}", headers=bearer(operator_key))

    problem(client.post("/v1/users", json={"external_id": "x", "time_zone": "UTC"},
                        headers=bearer(created["key"])), 401)
    assert count(app, User) == 0


def test_authentication_comes_before_body_validation(client, app):
    """An anonymous caller learns nothing about the schema."""
    response = client.post("/v1/users", data=b"{not json", content_type="application/json")

    problem(response, 401)


# --- rate limit ------------------------------------------------------------------------------

def test_too_many_requests_is_429_with_retry_after(tmp_path):
    app = make_app(make_settings(tmp_path / "var", rate_limit="3/minute"))
    client = app.test_client()
    key, other = api_key(app, "app"), api_key(app, "app", "another server")

    statuses = [client.get("/v1/users", headers=bearer(key)).status_code for _ in range(3)]
    limited = client.get("/v1/users", headers=bearer(key))

    assert statuses == [200, 200, 200]
    ok = client.get("/v1/users", headers=bearer(other))
    assert "Retry-After" not in ok.headers  # only a 429 or 503 tells the caller to wait
    body = problem(limited, 429)
    assert "Retry-After" in body["detail"]
    assert 0 < int(limited.headers["Retry-After"]) <= 60
    # another caller has its own budget
    assert client.get("/v1/users", headers=bearer(other)).status_code == 200
