"""The APNs and Web Push providers against local protocol servers: HTTP/2 + JWT, VAPID + aes128gcm."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from smartsvc.delivery import MAX_PAYLOAD_BYTES, PushMessage
from smartsvc.delivery.apns import ApnsConfig, ApnsProvider
from smartsvc.delivery.webpush import WebPushConfig, WebPushProvider, topic
from smartsvc.models import Device
from smartsvc.timeutil import utcnow
from tests.support.factories import make_app, make_settings
from tests.support.fake_apns import FakeApns
from tests.support.fake_webpush import FakeWebPush
from tests.support.suggestions import suggestion_world

KEY_ID, TEAM_ID, TOPIC = "KEY1234567", "TEAM123456", "com.example.parking"
APNS_TOKEN = "a1" * 32


def write_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return key


@pytest.fixture
def ca(tmp_path: Path) -> tuple[trustme.CA, Path]:
    authority = trustme.CA()
    path = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(path))
    return authority, path


@pytest.fixture
def apns_key(tmp_path: Path) -> tuple[ec.EllipticCurvePrivateKey, Path]:
    path = tmp_path / f"AuthKey_{KEY_ID}.p8"
    return write_key(path), path


@pytest.fixture
def vapid_key(tmp_path: Path) -> tuple[ec.EllipticCurvePrivateKey, Path]:
    path = tmp_path / "vapid_private.pem"
    return write_key(path), path


@pytest.fixture
def fake_apns(ca, apns_key) -> Iterator[FakeApns]:
    with FakeApns(ca[0], apns_key[0].public_key(), KEY_ID, TEAM_ID, TOPIC) as server:
        yield server


@pytest.fixture
def fake_webpush(ca, vapid_key) -> Iterator[FakeWebPush]:
    with FakeWebPush(ca[0], vapid_key[0].public_key()) as server:
        yield server


@pytest.fixture
def apns(fake_apns, apns_key, ca) -> Iterator[ApnsProvider]:
    provider = ApnsProvider(ApnsConfig(url=fake_apns.url, key_pem=apns_key[1].read_bytes(), key_id=KEY_ID,
                                       team_id=TEAM_ID, topic=TOPIC, ca_file=ca[1]))
    yield provider
    provider.close()


@pytest.fixture
def webpush(vapid_key, ca) -> Iterator[WebPushProvider]:
    provider = WebPushProvider(WebPushConfig(vapid_pem=vapid_key[1].read_bytes(), subject="mailto:ops@example.com",
                                             ca_file=ca[1], allow_private=True))
    yield provider
    provider.close()


def push(**changes) -> PushMessage:
    now = utcnow()
    values = dict(user_id=uuid.uuid4(), device_id=uuid.uuid4(), platform="apns", suggestion_id=uuid.uuid4(),
                  kind="spots_near_destination", title="Parking near Alexanderplatz", body="3 spots fit your car",
                  collapse_key="spots:trip-1", expires_at=(now + timedelta(hours=2)).replace(microsecond=0), at=now,
                  token=APNS_TOKEN)
    values.update(changes)
    return PushMessage(**values)


# --------------------------------------------------------------------------- APNs


def test_apns_push_reaches_the_phone_with_headers_and_alert(apns, fake_apns):
    message = push()
    result = apns.send(message)
    assert (result.ok, result.status_code, result.error) == (True, 200, None)
    [received] = fake_apns.pushes
    assert received.token == APNS_TOKEN
    assert received.headers["apns-topic"] == TOPIC
    assert received.headers["apns-push-type"] == "alert"
    assert received.headers["apns-priority"] == "10"
    assert received.headers["apns-collapse-id"] == "spots:trip-1"
    assert int(received.headers["apns-expiration"]) == int(message.expires_at.timestamp())
    assert received.payload["aps"]["alert"] == {"title": message.title, "body": message.body}
    assert {k: v for k, v in received.payload.items() if k != "aps"} == \
        {k: v for k, v in message.data().items() if k not in ("title", "body")}
    assert (received.claims["iss"], received.size <= 4096) == (TEAM_ID, True)


def test_apns_reuses_one_provider_token(apns, fake_apns):
    for n in range(3):
        assert apns.send(push(collapse_key=f"spots:trip-{n}")).ok
    assert len(fake_apns.pushes) == 3 and len(fake_apns.tokens_seen) == 1


def test_apns_410_deactivates_with_the_timestamp(apns, fake_apns):
    fake_apns.script(APNS_TOKEN, 410, "Unregistered", timestamp_ms=1_790_000_000_500)
    result = apns.send(push())
    assert (result.ok, result.token_dead, result.retryable, result.status_code) == (False, True, False, 410)
    assert result.token_dead_since == datetime(2026, 9, 21, 14, 13, 20, 500000, tzinfo=timezone.utc)
    assert fake_apns.pushes == []


def test_apns_bad_device_token_is_dead_and_429_is_retried_later(apns, fake_apns):
    fake_apns.script("b2" * 32, 400, "BadDeviceToken")
    dead = apns.send(push(token="b2" * 32))
    assert (dead.token_dead, dead.token_dead_since, dead.retryable) == (True, None, False)
    fake_apns.script(APNS_TOKEN, 429, "TooManyRequests", retry_after="7")
    busy = apns.send(push())
    assert (busy.ok, busy.token_dead, busy.retryable, busy.retry_after_s) == (False, False, True, 7)


def test_apns_expired_provider_token_is_re_signed_once(apns, fake_apns):
    assert apns.send(push()).ok
    fake_apns.expire_current_tokens()
    result = apns.send(push(collapse_key="spots:trip-2"))
    assert result.ok
    assert [(status, reason) for _, status, reason in fake_apns.answers] == \
        [(200, ""), (403, "ExpiredProviderToken"), (200, "")]
    assert len(fake_apns.tokens_seen) == 2
    assert apns.send(push(collapse_key="spots:trip-3")).ok and len(fake_apns.tokens_seen) == 2


def test_apns_huge_push_is_trimmed_within_4_kb_and_a_long_collapse_key_hashed(apns, fake_apns):
    result = apns.send(push(body="Parkplatz frei – " * 600, collapse_key="spots:" + "x" * 200))
    assert result.ok
    [received] = fake_apns.pushes
    assert received.size <= MAX_PAYLOAD_BYTES
    assert received.payload["aps"]["alert"]["body"].endswith("…")
    assert len(received.headers["apns-collapse-id"].encode()) == 64


def test_apns_stopped_server_is_retryable(apns_key, ca):
    authority = ca[0]
    with FakeApns(authority, apns_key[0].public_key(), KEY_ID, TEAM_ID, TOPIC) as server:
        url = server.url
    provider = ApnsProvider(ApnsConfig(url=url, key_pem=apns_key[1].read_bytes(), key_id=KEY_ID, team_id=TEAM_ID,
                                       topic=TOPIC, ca_file=ca[1]))
    result = provider.send(push())
    provider.close()
    assert (result.ok, result.retryable, result.status_code) == (False, True, None)


# --------------------------------------------------------------------------- Web Push


def test_webpush_decrypted_payload_is_the_message_data(webpush, fake_webpush):
    subscription = fake_webpush.subscribe()
    message = push(platform="webpush", token=None, subscription=subscription)
    result = webpush.send(message)
    assert (result.ok, result.status_code) == (True, 201)
    [received] = fake_webpush.for_subscription(subscription)
    assert received.json() == message.data()
    assert received.encrypted_size <= MAX_PAYLOAD_BYTES
    assert received.headers["content-encoding"] == "aes128gcm"
    assert received.headers["urgency"] == "normal"
    assert received.headers["topic"] == topic("spots:trip-1")
    assert 7100 <= int(received.headers["ttl"]) <= 7200
    assert (received.claims["aud"], received.claims["sub"]) == (fake_webpush.origin, "mailto:ops@example.com")


def test_webpush_huge_payload_fits_and_keeps_the_ids(webpush, fake_webpush):
    subscription = fake_webpush.subscribe()
    message = push(platform="webpush", token=None, subscription=subscription, body="Parkplatz frei – " * 600)
    assert webpush.send(message).ok
    [received] = fake_webpush.received
    data = received.json()
    assert received.encrypted_size <= MAX_PAYLOAD_BYTES
    assert data["body"].endswith("…") and message.body.startswith(data["body"][:-1])
    assert {k: data[k] for k in ("suggestion_id", "kind", "collapse_key", "expires_at", "title")} == \
        {k: message.data()[k] for k in ("suggestion_id", "kind", "collapse_key", "expires_at", "title")}


@pytest.mark.parametrize("status, dead, retryable", [(410, True, False), (404, True, False), (429, False, True),
                                                     (503, False, True), (413, False, False)])
def test_webpush_scripted_answers(webpush, fake_webpush, status, dead, retryable):
    subscription = fake_webpush.subscribe()
    fake_webpush.script(subscription, status, retry_after="30" if status == 429 else None)
    result = webpush.send(push(platform="webpush", token=None, subscription=subscription))
    assert (result.ok, result.token_dead, result.retryable, result.status_code) == (False, dead, retryable, status)
    if status == 429:
        assert result.retry_after_s == 30
    assert fake_webpush.received == []


def test_webpush_unknown_subscription_is_dead(webpush, fake_webpush):
    gone = {**fake_webpush.subscribe(), "endpoint": fake_webpush.origin + "/push/unsubscribed"}
    result = webpush.send(push(platform="webpush", token=None, subscription=gone))
    assert (result.token_dead, result.status_code) == (True, 404)


def test_webpush_private_endpoints_are_refused_by_default(vapid_key, ca, fake_webpush):
    provider = WebPushProvider(WebPushConfig(vapid_pem=vapid_key[1].read_bytes(), subject="mailto:ops@example.com",
                                             ca_file=ca[1]))
    result = provider.send(push(platform="webpush", token=None, subscription=fake_webpush.subscribe()))
    provider.close()
    assert not result.ok and "non-public" in result.error
    assert fake_webpush.answers == []  # never contacted


# --------------------------------------------------------------------------- through the delivery service


def test_each_platform_reaches_its_push_service(tmp_path, ca, apns_key, vapid_key, fake_apns, fake_webpush):
    settings = make_settings(
        tmp_path / "var", push_provider="auto",
        apns_url=fake_apns.url, apns_key_file=apns_key[1], apns_key_id=KEY_ID, apns_team_id=TEAM_ID,
        apns_topic=TOPIC, apns_ca_file=ca[1],
        vapid_private_key=vapid_key[1], vapid_subject="mailto:ops@example.com", webpush_ca_file=ca[1],
        webpush_allow_private=True)
    app = make_app(settings)
    try:
        world = suggestion_world(app)
        alice = world.user("alice", devices=0)
        subscription = fake_webpush.subscribe()
        for body in ({"platform": "apns", "token": APNS_TOKEN}, {"platform": "webpush", "subscription": subscription}):
            response = world.client.post("/v1/me/devices", headers=alice.headers, json=body)
            assert response.status_code == 201, response.get_json()
        sid = world.propose(alice, world.rule("spots"), title="3 spots near Alexanderplatz")
        assert world.deliver() == 1

        [apns_push] = fake_apns.pushes
        [web_push] = fake_webpush.received
        assert apns_push.token == APNS_TOKEN and apns_push.payload["suggestion_id"] == sid
        assert apns_push.payload["aps"]["alert"]["title"] == "3 spots near Alexanderplatz"
        assert web_push.json()["suggestion_id"] == sid and web_push.json()["title"] == "3 spots near Alexanderplatz"
        assert world.pushes() == []  # nothing fell back to the log provider
        detail = world.get(alice, sid)
        assert detail["delivery_status"] == "delivered"
        assert sorted((a["provider"], a["status"]) for a in detail["push_attempts"]) == \
            [("apns", "sent"), ("webpush", "sent")]

        # The phone uninstalled the app, the browser unsubscribed: both devices are deactivated.
        fake_apns.script(APNS_TOKEN, 410, "Unregistered", timestamp_ms=int(utcnow().timestamp() * 1000) + 1000)
        fake_webpush.script(subscription, 410)
        world.propose(alice, world.rule("spots"), title="later")
        world.deliver()
        with world.database.session() as session:
            active = {d.platform: d.active for d in session.scalars(select(Device))}
        assert active == {"apns": False, "webpush": False}
    finally:
        app.extensions["smartsvc"].database.engine.dispose()
