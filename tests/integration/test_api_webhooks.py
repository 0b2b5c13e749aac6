"""The webhook API: registration rules (SSRF, event types, limits), ownership, and what leaves about a user.

Personal data (events about a user) reach a partner only with the user's
``partner_sharing`` consent, and each such delivery is in the user's sharing
ledger; withdrawing the consent cancels what is not sent yet.
"""

from __future__ import annotations

import io
import json
import uuid

import pytest
from sqlalchemy import select

from smartsvc.models import SharingLedgerEntry, WebhookEndpoint
from smartsvc.services.dataset_import import run_import
from tests.support.factories import api_key, bearer, make_app, make_settings
from tests.support.webhook_receiver import WebhookReceiver
from tests.support.webhook_world import WebhookWorld, webhook_settings, webhook_world


@pytest.fixture
def world(tmp_path) -> WebhookWorld:
    return webhook_world(make_app(webhook_settings(tmp_path / "var", max_webhooks=3)))


@pytest.fixture
def receiver():
    with WebhookReceiver() as server:
        yield server


def post(world: WebhookWorld, body: dict, key: str | None = None):
    return world.client.post("/v1/webhooks", headers=bearer(key or world.partner), json=body)


def test_create_read_change_list_and_delete(world, receiver):
    created = post(world, {"url": receiver.url(), "event_types": ["suggestion.created", "suggestion.created",
                                                                  "dataset.published"],
                           "description": "CRM sync", "coordinate_decimals": 3})
    assert created.status_code == 201
    body = created.get_json()
    assert created.headers["Location"].endswith(f"/v1/webhooks/{body['id']}")
    assert (body["event_types"], body["description"], body["coordinate_decimals"], body["enabled"]) == \
        (["suggestion.created", "dataset.published"], "CRM sync", 3, True)
    assert body["secret"].startswith("whsec_")

    shown = world.webhook(body["id"])
    assert "secret" not in shown and shown["url"] == receiver.url()
    with world.database.session() as session:  # stored encrypted, never in clear
        stored = session.get(WebhookEndpoint, uuid.UUID(body["id"]))
        assert body["secret"] not in stored.secret_encrypted

    changed = world.client.patch(f"/v1/webhooks/{body['id']}", headers=bearer(world.partner),
                                 json={"event_types": ["geofence.entered"], "description": None, "enabled": False})
    assert changed.status_code == 200
    assert (changed.get_json()["event_types"], changed.get_json()["description"], changed.get_json()["enabled"]) == \
        (["geofence.entered"], None, False)
    assert changed.get_json()["disabled_reason"] == "disabled by its owner"

    listed = world.client.get("/v1/webhooks", headers=bearer(world.partner)).get_json()
    assert [item["id"] for item in listed["items"]] == [body["id"]] and listed["next_cursor"] is None
    assert world.client.delete(f"/v1/webhooks/{body['id']}", headers=bearer(world.partner)).status_code == 204
    assert world.client.get(f"/v1/webhooks/{body['id']}", headers=bearer(world.partner)).status_code == 404


def test_bad_input_is_422_naming_the_field(world, receiver):
    unknown = post(world, {"url": receiver.url(), "event_types": ["suggestion.created", "car.crashed"]})
    assert unknown.status_code == 422
    assert "car.crashed" in unknown.get_json()["errors"]["event_types"][0]
    for body, field in (({"url": receiver.url(), "event_types": []}, "event_types"),
                        ({"event_types": ["webhook.test"]}, "url"),
                        ({"url": "ftp://partner.example/x", "event_types": ["webhook.test"]}, "url"),
                        ({"url": "https://p.example/" + "a" * 2100, "event_types": ["webhook.test"]}, "url"),
                        ({"url": receiver.url(), "event_types": ["webhook.test"], "coordinate_decimals": 7},
                         "coordinate_decimals")):
        response = post(world, body)
        assert response.status_code == 422, body
        assert field in response.get_json()["errors"], response.get_json()
    hook = world.register(receiver.url(), ["webhook.test"])
    empty = world.client.patch(f"/v1/webhooks/{hook['id']}", headers=bearer(world.partner), json={})
    assert empty.status_code == 422


def test_private_and_plain_http_destinations_are_refused_by_default(tmp_path):
    app = make_app(make_settings(tmp_path / "var"))
    client, key = app.test_client(), api_key(app, "partner")
    for url in ("http://127.0.0.1:8080/hook", "https://127.0.0.1/hook", "https://10.0.0.7/hook",
                "https://169.254.169.254/latest/meta-data", "https://[::1]/hook", "https://localhost/hook"):
        response = client.post("/v1/webhooks", headers=bearer(key), json={"url": url, "event_types": ["webhook.test"]})
        assert response.status_code == 422, url
        assert list(response.get_json()["errors"]) == ["url"], url
    # A public address is fine (an IP literal: no DNS lookup here); changing it is checked again.
    public = client.post("/v1/webhooks", headers=bearer(key),
                         json={"url": "https://93.184.215.14/hook", "event_types": ["webhook.test"]})
    assert public.status_code == 201, public.get_json()
    changed = client.patch(f"/v1/webhooks/{public.get_json()['id']}", headers=bearer(key),
                           json={"url": "https://192.168.1.20/hook"})
    assert changed.status_code == 422 and list(changed.get_json()["errors"]) == ["url"]


def test_a_key_sees_only_its_own_webhooks(world, receiver):
    hook = world.register(receiver.url(), ["suggestion.created"])
    other = world.key("partner")
    operator = world.key("operator")
    mine = world.register(receiver.url("/op"), ["dataset.published"], key=operator)
    base = f"/v1/webhooks/{hook['id']}"
    for key in (other, operator):
        headers = bearer(key)
        assert world.client.get(base, headers=headers).status_code == 404
        assert world.client.patch(base, headers=headers, json={"description": "mine"}).status_code == 404
        assert world.client.get(f"{base}/deliveries", headers=headers).status_code == 404
        assert world.client.post(f"{base}/test", headers=headers).status_code == 404
        assert world.client.post(f"{base}/rotate-secret", headers=headers).status_code == 404
        assert world.client.post(f"{base}/recover", headers=headers,
                                 json={"since": "2026-01-01T00:00:00Z"}).status_code == 404
        assert world.client.delete(base, headers=headers).status_code == 404
    assert [h["id"] for h in world.client.get("/v1/webhooks", headers=bearer(operator)).get_json()["items"]] == \
        [mine["id"]]
    assert world.client.get("/v1/webhooks", headers=bearer(other)).get_json()["items"] == []
    app_key = world.key("app")
    assert world.client.get("/v1/webhooks", headers=bearer(app_key)).status_code == 403
    # Another endpoint's delivery through this endpoint's path: 404.
    world.client.post(f"/v1/webhooks/{mine['id']}/test", headers=bearer(operator))
    [delivery] = world.deliveries(mine["id"], key=operator)
    retry = world.client.post(f"{base}/deliveries/{delivery['id']}/retry", headers=bearer(world.partner))
    assert retry.status_code == 404


def test_at_most_max_webhooks_per_key(world, receiver):
    for n in range(3):
        world.register(receiver.url(f"/{n}"), ["webhook.test"])
    response = post(world, {"url": receiver.url("/4"), "event_types": ["webhook.test"]})
    assert response.status_code == 409
    world.register(receiver.url("/4"), ["webhook.test"], key=world.key("partner"))  # per key


def test_personal_data_needs_consent_and_is_in_the_ledger(world, receiver):
    hook = world.register(receiver.url(), ["suggestion.created", "suggestion.feedback"], coordinate_decimals=2)
    alice, bob = world.user("alice"), world.user("bob", sharing=False)
    world.suggest(bob)
    world.drain()
    assert receiver.requests == [] and world.deliveries(hook["id"]) == []

    sid = world.suggest(alice, payload={"spots": [{"lat": 52.520008, "lon": 13.404954}],
                                        "destination": {"coordinates": [13.377704, 52.516275]}})
    feedback = world.client.post(f"/v1/me/suggestions/{sid}/feedback", headers=alice.headers,
                                 json={"action": "opened"})
    assert feedback.status_code == 200
    world.drain()
    created, opened = (json.loads(r.body) for r in receiver.requests)
    assert created["data"]["payload"] == {"spots": [{"lat": 52.52, "lon": 13.4}],
                                          "destination": {"coordinates": [13.38, 52.52]}}
    assert (opened["type"], opened["data"]["action"], opened["data"]["suggestion_id"]) == \
        ("suggestion.feedback", "opened", sid)

    with world.database.session() as session:
        ledger = list(session.scalars(select(SharingLedgerEntry).order_by(SharingLedgerEntry.id)))
    assert [(e.user_id, e.channel, e.event_type, e.recipient_id) for e in ledger] == \
        [(uuid.UUID(alice.id), "webhook", "suggestion.created", hook["id"]),
         (uuid.UUID(alice.id), "webhook", "suggestion.feedback", hook["id"])]
    assert {"title", "user_id", "payload.spots[].lat", "payload.spots[].lon"} <= set(ledger[0].fields)
    assert "127.0.0.1" in ledger[0].recipient
    assert {d["message_id"][4:] for d in world.deliveries(hook["id"])} == \
        {uuid.UUID(e.reference_id).hex for e in ledger}


def test_withdrawing_consent_cancels_what_is_not_sent_yet(world, receiver):
    hook = world.register(receiver.url(), ["suggestion.created"])
    alice = world.user("alice")
    receiver.set_default(500)
    world.suggest(alice)
    world.drain()
    assert world.deliveries(hook["id"])[0]["status"] == "failed"
    pending = world.suggest(alice)  # not sent yet when the consent goes
    world.set_sharing(alice, False)
    receiver.set_default(200)
    world.drain()
    [latest, _] = world.deliveries(hook["id"])
    assert (latest["payload"]["data"]["id"], latest["status"]) == (pending, "cancelled")
    assert "consent" in latest["status_reason"]
    assert all(r.body and json.loads(r.body)["data"]["id"] != pending for r in receiver.requests)
    # A retry cannot bring it back without the consent.
    world.client.post(f"/v1/webhooks/{hook['id']}/deliveries/{latest['id']}/retry", headers=bearer(world.partner))
    world.drain()
    assert world.deliveries(hook["id"])[0]["status"] == "cancelled"
    world.suggest(alice)  # new events are not even written
    assert len(world.deliveries(hook["id"])) == 2


SPOTS = b'{"type": "FeatureCollection", "features": [' \
        b'{"type": "Feature", "id": "s1", "geometry": {"type": "Point", "coordinates": [2.351234, 48.851234]}, ' \
        b'"properties": {"kind": "space", "rules": [{"activity": "parking"}]}}]}'


def test_publishing_a_dataset_is_an_event_without_personal_data(world, receiver):
    hook = world.register(receiver.url(), ["dataset.published"], coordinate_decimals=1)
    operator = world.key("operator")
    upload = world.client.post("/v1/datasets", headers=bearer(operator), content_type="multipart/form-data",
                               data={"file": (io.BytesIO(SPOTS), "spots.geojson"), "name": "Paris",
                                     "layer": "parking"})
    assert upload.status_code == 202, upload.get_json()
    dataset_id = upload.get_json()["id"]
    run_import(world.database, world.app.extensions["smartsvc"].settings, uuid.UUID(dataset_id))
    assert world.client.post(f"/v1/datasets/{dataset_id}/publish", headers=bearer(operator)).status_code == 200
    world.drain()
    [request] = receiver.requests
    payload = json.loads(request.body)
    assert payload["type"] == "dataset.published"
    assert (payload["data"]["id"], payload["data"]["layer"], payload["data"]["bbox"]) == \
        (dataset_id, "parking", [2.4, 48.9, 2.4, 48.9])
    with world.database.session() as session:
        assert session.scalars(select(SharingLedgerEntry)).all() == []
    assert world.deliveries(hook["id"])[0]["status"] == "delivered"
