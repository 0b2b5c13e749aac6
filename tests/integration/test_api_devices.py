"""Push devices: register (deduplicated, token masked), list, remove."""

from __future__ import annotations

import uuid

import pytest

from smartsvc.models import Device
from tests.support.checks import count, problem
from tests.support.factories import api_key, make_app, make_settings, make_user

FCM_TOKEN = "fcm-registration-token-" + "x" * 100 + "SECRET"
SUBSCRIPTION = {"endpoint": "https://fcm.googleapis.com/fcm/send/abc123",
                "keys": {"p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQ", "auth": "tBHItJI5svbpez7KI4CCXg"}}






def register(client, user, **body):
    return client.post("/v1/me/devices", json=body, headers=user.headers)


def listed(client, user) -> list[dict]:
    response = client.get("/v1/me/devices", headers=user.headers)
    assert response.status_code == 200
    return response.get_json()["items"]


def test_register_an_fcm_device_with_its_token_masked(client, user):
    response = register(client, user, platform="fcm", token=FCM_TOKEN)

    assert response.status_code == 201
    body = response.get_json()
    assert body["platform"] == "fcm"
    assert body["active"] is True
    assert body["token_hint"] == "…SECRET"
    assert FCM_TOKEN not in response.get_data(as_text=True)
    assert listed(client, user) == [body]
    assert FCM_TOKEN not in client.get("/v1/me/devices", headers=user.headers).get_data(as_text=True)


def test_register_a_web_push_subscription_showing_only_the_origin(client, user):
    response = register(client, user, platform="webpush", subscription=SUBSCRIPTION)

    assert response.status_code == 201
    body = response.get_json()
    assert body["endpoint_origin"] == "https://fcm.googleapis.com"
    assert body["token_hint"] is None
    assert "abc123" not in response.get_data(as_text=True)
    assert SUBSCRIPTION["keys"]["auth"] not in response.get_data(as_text=True)


def test_the_same_device_registered_twice_stays_one(client, app, user):
    first = register(client, user, platform="apns", token="apns-token-1234567890")
    second = register(client, user, platform="apns", token="apns-token-1234567890")

    assert first.status_code == 201
    assert second.status_code == 200
    assert second.get_json()["id"] == first.get_json()["id"]
    assert [d["id"] for d in listed(client, user)] == [first.get_json()["id"]]
    assert count(app, Device) == 1


def test_the_same_token_for_two_users_is_two_devices(client, app, user, other_user):
    mine = register(client, user, platform="fcm", token=FCM_TOKEN)
    theirs = register(client, other_user, platform="fcm", token=FCM_TOKEN)

    assert mine.status_code == theirs.status_code == 201
    assert [d["id"] for d in listed(client, other_user)] == [theirs.get_json()["id"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "platform"),
        ({"platform": "sms", "token": "abc"}, "platform"),
        ({"platform": "fcm"}, "token"),
        ({"platform": "fcm", "token": ""}, "token"),
        ({"platform": "fcm", "token": 12345}, "token"),
        ({"platform": "fcm", "token": "t" * 4097}, "token"),
        ({"platform": "fcm", "token": "abc", "subscription": SUBSCRIPTION}, "subscription"),
        ({"platform": "webpush"}, "subscription"),
        ({"platform": "webpush", "token": "abc", "subscription": SUBSCRIPTION}, "token"),
        ({"platform": "webpush", "subscription": {**SUBSCRIPTION, "endpoint": "http://push.example/x"}},
         "subscription.endpoint"),
        ({"platform": "webpush", "subscription": {**SUBSCRIPTION, "endpoint": "not a url"}},
         "subscription.endpoint"),
        ({"platform": "webpush", "subscription": {"endpoint": SUBSCRIPTION["endpoint"], "keys": {"auth": "a"}}},
         "subscription.keys.p256dh"),
        ({"platform": "webpush", "subscription": {**SUBSCRIPTION, "extra": 1}}, "subscription.extra"),
        ({"platform": "fcm", "token": "abc", "name": "my phone"}, "name"),
    ],
)
def test_bad_device_bodies_are_422_naming_the_field_and_store_nothing(client, app, user, body, field):
    problem(register(client, user, **body), 422, field)

    assert count(app, Device) == 0


def test_delete_a_device(client, app, user):
    device_id = register(client, user, platform="fcm", token=FCM_TOKEN).get_json()["id"]

    response = client.delete(f"/v1/me/devices/{device_id}", headers=user.headers)

    assert response.status_code == 204
    assert listed(client, user) == []
    problem(client.delete(f"/v1/me/devices/{device_id}", headers=user.headers), 404)
    again = register(client, user, platform="fcm", token=FCM_TOKEN)
    assert again.status_code == 201
    assert again.get_json()["id"] != device_id


def test_another_users_device_is_404_and_survives(client, app, user, other_user):
    device_id = register(client, user, platform="fcm", token=FCM_TOKEN).get_json()["id"]

    problem(client.delete(f"/v1/me/devices/{device_id}", headers=other_user.headers), 404)

    assert [d["id"] for d in listed(client, user)] == [device_id]
    assert listed(client, other_user) == []


def test_an_unknown_device_is_404(client, user):
    problem(client.delete(f"/v1/me/devices/{uuid.uuid4()}", headers=user.headers), 404)


def test_the_number_of_devices_per_user_is_capped(tmp_path):
    app = make_app(make_settings(tmp_path / "var", max_devices_per_user=2))
    client = app.test_client()
    user = make_user(client, api_key(app, "app"), "many-phones")
    for n in range(2):
        assert register(client, user, platform="fcm", token=f"token-{n}").status_code == 201

    problem(register(client, user, platform="fcm", token="token-3"), 422, "token")

    assert count(app, Device) == 2
    # an already known device may still check in
    assert register(client, user, platform="fcm", token="token-0").status_code == 200


def test_devices_page_with_cursors(client, user):
    ids = [register(client, user, platform="fcm", token=f"token-{n}").get_json()["id"] for n in range(3)]

    first = client.get("/v1/me/devices?limit=2", headers=user.headers).get_json()
    second = client.get(f"/v1/me/devices?limit=2&cursor={first['next_cursor']}", headers=user.headers).get_json()

    assert [d["id"] for d in first["items"]] == ids[:2]
    assert first["next_cursor"]
    assert [d["id"] for d in second["items"]] == ids[2:]
    assert second["next_cursor"] is None
    problem(client.get("/v1/me/devices?limit=501", headers=user.headers), 422, "limit")


def test_registering_with_an_idempotency_key_replays(client, app, user):
    headers = {**user.headers, "Idempotency-Key": "device-1"}
    first = client.post("/v1/me/devices", json={"platform": "fcm", "token": FCM_TOKEN}, headers=headers)
    again = client.post("/v1/me/devices", json={"platform": "fcm", "token": FCM_TOKEN}, headers=headers)

    assert first.status_code == again.status_code == 201
    assert again.get_json() == first.get_json()
    assert count(app, Device) == 1
    problem(client.post("/v1/me/devices", json={"platform": "fcm", "token": "other"}, headers=headers),
            422, "Idempotency-Key")
    assert count(app, Device) == 1
