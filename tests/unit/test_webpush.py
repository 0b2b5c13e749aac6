"""Web Push provider pieces: Topic and TTL rules, the VAPID JWT and its reuse, encryption, answers → results."""

from __future__ import annotations

import base64
import json
import os
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import http_ece
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from smartsvc.config import ConfigError, load_settings
from smartsvc.delivery import PushMessage
from smartsvc.delivery.webpush import (
    MAX_PLAINTEXT_BYTES,
    VAPID_LIFETIME_S,
    VapidSigner,
    WebPushConfig,
    WebPushProvider,
    encrypt,
    refuse_reason,
    result_of,
    topic,
    ttl_seconds,
)

AT = datetime(2026, 11, 24, 9, 0, tzinfo=timezone.utc)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def browser_subscription(endpoint: str = "https://push.example.com/push/abc"):
    """A subscription as a browser makes it, with the private half a test can decrypt with."""
    key, auth = ec.generate_private_key(ec.SECP256R1()), os.urandom(16)
    public = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return {"endpoint": endpoint, "keys": {"p256dh": b64url(public), "auth": b64url(auth)}}, key, auth


def message(**changes) -> PushMessage:
    values = dict(user_id=uuid.uuid4(), device_id=uuid.uuid4(), platform="webpush", suggestion_id=uuid.uuid4(),
                  kind="spots_near_destination", title="Parking", body="3 spots fit your car",
                  collapse_key="spots:trip-1", expires_at=AT + timedelta(hours=2), at=AT)
    values.update(changes)
    return PushMessage(**values)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_topic_is_the_collapse_key_when_it_is_short_base64url_else_a_hash():
    assert topic("trip-1_spots") == "trip-1_spots"
    assert topic("a" * 32) == "a" * 32
    for key in ("spots:trip-1", "a" * 33, "Parken in Köln"):
        value = topic(key)
        assert len(value) == 32 and all(c.isalnum() or c in "-_" for c in value)
        assert topic(key) == value  # stable, so the service replaces the older push
    assert topic("spots:trip-1") != topic("spots:trip-2")


def test_ttl_is_the_time_left_until_the_suggestion_expires():
    now = AT.timestamp()
    assert ttl_seconds(message(), now) == 7200
    assert ttl_seconds(message(expires_at=AT - timedelta(minutes=1)), now) == 0
    assert ttl_seconds(message(expires_at=AT + timedelta(days=90)), now) == 28 * 86400


def test_vapid_header_claims_and_reuse():
    key, clock = ec.generate_private_key(ec.SECP256R1()), Clock(1_700_000_000.0)
    signer = VapidSigner(pem(key), "mailto:ops@example.com", clock)
    header = signer.header("https://push.example.com")
    scheme, _, params = header.partition(" ")
    parts = dict(part.split("=", 1) for part in params.split(","))
    assert scheme == "vapid"
    public = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    assert parts["k"] == b64url(public)
    claims = jwt.decode(parts["t"], key.public_key(), algorithms=["ES256"], audience="https://push.example.com",
                        options={"verify_exp": False})
    assert claims == {"aud": "https://push.example.com", "exp": 1_700_000_000 + VAPID_LIFETIME_S,
                      "sub": "mailto:ops@example.com"}

    clock.now += VAPID_LIFETIME_S - 3700  # more than an hour left: the same header
    assert signer.header("https://push.example.com") == header
    assert signer.header("https://other.example.org") != header  # one per audience
    clock.now += 200  # less than an hour left: signed again
    assert signer.header("https://push.example.com") != header


def test_the_payload_is_encrypted_for_the_subscription():
    subscription, key, auth = browser_subscription()
    body = encrypt(subscription, b'{"hello":"world"}')
    assert http_ece.decrypt(body, private_key=key, auth_secret=auth, version="aes128gcm") == b'{"hello":"world"}'
    assert body[:16] != body[16:32]  # a random salt leads the record
    with pytest.raises(ValueError, match="unusable"):
        encrypt({"endpoint": subscription["endpoint"], "keys": {"p256dh": "AAAA", "auth": "!!"}}, b"x")


def test_request_has_the_headers_and_fits_4_kb(tmp_path):
    subscription, key, auth = browser_subscription()
    provider = WebPushProvider(WebPushConfig(vapid_pem=pem(ec.generate_private_key(ec.SECP256R1())),
                                             subject="mailto:ops@example.com"), clock=Clock(AT.timestamp()))
    huge = message(subscription=subscription, body="Parkplatz frei – " * 600)
    endpoint, headers, body = provider.request(huge)
    assert endpoint == subscription["endpoint"]
    assert {k: headers[k] for k in ("ttl", "urgency", "topic", "content-encoding")} == \
        {"ttl": "7200", "urgency": "normal", "topic": topic("spots:trip-1"), "content-encoding": "aes128gcm"}
    assert headers["authorization"].startswith("vapid t=")
    assert len(body) <= 4096
    plaintext = http_ece.decrypt(body, private_key=key, auth_secret=auth, version="aes128gcm")
    assert len(plaintext) <= MAX_PLAINTEXT_BYTES
    data = json.loads(plaintext)
    assert data["suggestion_id"] == str(huge.suggestion_id) and data["body"].endswith("…")


@pytest.mark.parametrize("status, dead, retryable", [
    (404, True, False), (410, True, False), (413, False, False), (400, False, False), (403, False, False),
    (301, False, False), (429, False, True), (500, False, True), (503, False, True),
])
def test_answers_map_to_results(status, dead, retryable):
    result = result_of(httpx.Response(status), 3)
    assert (result.ok, result.token_dead, result.retryable, result.status_code) == (False, dead, retryable, status)


def test_success_and_retry_after():
    assert result_of(httpx.Response(201), 3).ok
    assert result_of(httpx.Response(429, headers={"retry-after": "120"}), 3).retry_after_s == 120


def test_endpoints_must_be_https_and_public_unless_allowed():
    assert refuse_reason("http://push.example.com/x", allow_private=True) == "endpoint is not an https URL"
    assert "non-public" in refuse_reason("https://127.0.0.1:8443/x", allow_private=False)
    assert "non-public" in refuse_reason("https://10.1.2.3/x", allow_private=False)
    assert "non-public" in refuse_reason("https://[::1]/x", allow_private=False)
    assert refuse_reason("https://127.0.0.1:8443/x", allow_private=True) is None
    assert refuse_reason("https://8.8.8.8/x", allow_private=False) is None


def test_a_refused_endpoint_is_not_contacted():
    subscription, _, _ = browser_subscription("https://127.0.0.1:9/push/x")
    provider = WebPushProvider(WebPushConfig(vapid_pem=pem(ec.generate_private_key(ec.SECP256R1())),
                                             subject="mailto:ops@example.com"))
    result = provider.send(message(subscription=subscription))
    assert (result.ok, result.retryable, result.token_dead, result.status_code) == (False, False, False, None)
    assert "non-public" in result.error


def _vapid_file(tmp_path: Path) -> Path:
    path = tmp_path / "vapid_private.pem"
    path.write_bytes(pem(ec.generate_private_key(ec.SECP256R1())))
    return path


def test_settings_need_a_vapid_subject(tmp_path):
    with pytest.raises(ConfigError, match="SMARTSVC_VAPID_SUBJECT"):
        load_settings({"SMARTSVC_VAR_DIR": str(tmp_path), "SMARTSVC_VAPID_PRIVATE_KEY": str(_vapid_file(tmp_path))})
    settings = load_settings({"SMARTSVC_VAR_DIR": str(tmp_path), "SMARTSVC_VAPID_PRIVATE_KEY": str(_vapid_file(tmp_path)),
                              "SMARTSVC_VAPID_SUBJECT": "mailto:ops@example.com"})
    assert settings.vapid_subject == "mailto:ops@example.com" and not settings.webpush_allow_private


def test_a_key_that_is_not_p256_is_a_config_error(tmp_path):
    from smartsvc.delivery.webpush import webpush_provider

    bad = tmp_path / "rsa.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    settings = load_settings({"SMARTSVC_VAR_DIR": str(tmp_path), "SMARTSVC_VAPID_PRIVATE_KEY": str(bad),
                              "SMARTSVC_VAPID_SUBJECT": "mailto:ops@example.com"})
    with pytest.raises(ConfigError, match="SMARTSVC_VAPID_PRIVATE_KEY"):
        webpush_provider(settings)
