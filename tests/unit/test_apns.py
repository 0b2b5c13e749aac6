"""APNs provider pieces: the apns-* headers, the provider JWT and its reuse, the payload limit, answers → results."""

from __future__ import annotations

import json
import socket
import uuid
from datetime import datetime, timezone
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from smartsvc.config import ConfigError, load_settings
from smartsvc.delivery import MAX_PAYLOAD_BYTES, PushMessage
from smartsvc.delivery.apns import (
    TOKEN_REUSE_S,
    ApnsConfig,
    ApnsProvider,
    ProviderToken,
    apns_headers,
    apns_payload,
    collapse_id,
    encode_payload,
    fit_apns,
    result_of,
)

AT = datetime(2026, 11, 24, 9, 0, tzinfo=timezone.utc)
EXPIRES = datetime(2026, 11, 24, 15, 0, tzinfo=timezone.utc)


def message(**changes) -> PushMessage:
    values = dict(user_id=uuid.uuid4(), device_id=uuid.uuid4(), platform="apns", suggestion_id=uuid.uuid4(),
                  kind="spots_near_destination", title="Parking near Alexanderplatz", body="3 spots fit your car",
                  collapse_key="spots:trip-1", expires_at=EXPIRES, at=AT, token="a" * 64)
    values.update(changes)
    return PushMessage(**values)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_headers_carry_topic_type_priority_expiry_and_collapse_id():
    headers = apns_headers(message(), "com.example.parking")
    assert headers == {
        "apns-topic": "com.example.parking", "apns-push-type": "alert", "apns-priority": "10",
        "apns-expiration": str(int(EXPIRES.timestamp())), "apns-collapse-id": "spots:trip-1",
    }


def test_a_collapse_key_over_64_bytes_becomes_its_hash():
    exactly = "k" * 64
    assert collapse_id(exactly) == exactly
    long_key = "spots:" + "x" * 100
    hashed = collapse_id(long_key)
    assert len(hashed.encode()) == 64 and hashed != long_key[:64]
    assert collapse_id(long_key) == hashed  # stable: the phone collapses repeated pushes
    assert collapse_id(long_key + "y") != hashed
    # 22 three-byte characters are 66 bytes: too long although only 22 characters
    assert len(collapse_id("€" * 22).encode()) == 64 and collapse_id("€" * 22) != "€" * 22
    assert collapse_id("€" * 21) == "€" * 21


def test_payload_has_the_alert_and_every_id():
    original = message()
    payload = apns_payload(original)
    assert payload["aps"] == {"alert": {"title": original.title, "body": original.body}}
    rest = {k: v for k, v in payload.items() if k != "aps"}
    assert rest == {k: v for k, v in original.data().items() if k not in ("title", "body")}


def test_a_huge_push_is_trimmed_to_4_kb_and_keeps_the_ids():
    original = message(body="Parkplatz frei – " * 800, title="T" * 300)
    fitted = fit_apns(original)
    size = len(encode_payload(fitted))
    assert MAX_PAYLOAD_BYTES - 16 < size <= MAX_PAYLOAD_BYTES
    assert fitted.body.endswith("…") and fitted.title == original.title
    decoded = json.loads(encode_payload(fitted))
    assert decoded["suggestion_id"] == str(original.suggestion_id) and decoded["collapse_key"] == "spots:trip-1"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def test_provider_token_claims_and_reuse_for_50_minutes():
    key, clock = _key(), Clock(1_700_000_000.0)
    tokens = ProviderToken(key, "KEY1234567", "TEAM123456", clock)
    first = tokens.current()
    assert jwt.get_unverified_header(first) == {"alg": "ES256", "kid": "KEY1234567", "typ": "JWT"}
    claims = jwt.decode(first, key.public_key(), algorithms=["ES256"])
    assert claims == {"iss": "TEAM123456", "iat": 1_700_000_000}

    clock.now += TOKEN_REUSE_S - 60  # 49 minutes later: still the same token (Apple refuses frequent refreshes)
    assert tokens.current() == first
    clock.now += 60
    second = tokens.current()
    assert second != first
    assert jwt.decode(second, key.public_key(), algorithms=["ES256"])["iat"] == 1_700_000_000 + TOKEN_REUSE_S
    assert TOKEN_REUSE_S < 3600  # never sent when older than an hour


def test_refresh_re_signs_only_the_rejected_token():
    tokens = ProviderToken(_key(), "KEY1234567", "TEAM123456", Clock(1_700_000_000.0))
    first = tokens.current()
    second = tokens.refresh(first)
    assert second != first and tokens.current() == second
    assert tokens.refresh(first) == second  # another thread already replaced the rejected one


@pytest.mark.parametrize("status, body, dead, retryable", [
    (400, {"reason": "BadDeviceToken"}, True, False),
    (400, {"reason": "BadCollapseId"}, False, False),
    (403, {"reason": "InvalidProviderToken"}, False, False),
    (413, {"reason": "PayloadTooLarge"}, False, False),
    (429, {"reason": "TooManyRequests"}, False, True),
    (500, {"reason": "InternalServerError"}, False, True),
    (503, {"reason": "ServiceUnavailable"}, False, True),
])
def test_answers_map_to_results(status, body, dead, retryable):
    result = result_of(httpx.Response(status, json=body), 12)
    assert (result.ok, result.token_dead, result.retryable, result.status_code) == (False, dead, retryable, status)
    assert body["reason"] in result.error and result.latency_ms == 12


def test_410_is_a_dead_token_since_the_returned_timestamp():
    result = result_of(httpx.Response(410, json={"reason": "Unregistered", "timestamp": 1_790_000_000_123}), 5)
    assert result.token_dead and not result.retryable and result.status_code == 410
    assert result.token_dead_since == datetime.fromtimestamp(1_790_000_000.123, tz=timezone.utc)


def test_retry_after_is_honoured_and_200_is_sent():
    result = result_of(httpx.Response(429, json={"reason": "TooManyRequests"}, headers={"retry-after": "42"}), 1)
    assert result.retryable and result.retry_after_s == 42
    assert result_of(httpx.Response(200, headers={"apns-id": "X"}), 1).ok


def _p8(tmp_path: Path) -> Path:
    path = tmp_path / "AuthKey_KEY1234567.p8"
    path.write_bytes(_key().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return path


def test_an_unreachable_apns_is_retryable(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = ApnsProvider(ApnsConfig(url=f"https://127.0.0.1:{port}", key_pem=_p8(tmp_path).read_bytes(),
                                       key_id="KEY1234567", team_id="TEAM123456", topic="com.example.parking"))
    result = provider.send(message())
    provider.close()
    assert (result.ok, result.retryable, result.status_code) == (False, True, None)
    assert "unreachable" in result.error


def test_a_device_without_token_fails_without_sending(tmp_path):
    provider = ApnsProvider(ApnsConfig(url="https://127.0.0.1:9", key_pem=_p8(tmp_path).read_bytes(),
                                       key_id="K", team_id="T", topic="com.example.parking"))
    result = provider.send(message(token=None))
    assert (result.ok, result.retryable, result.token_dead) == (False, False, False)


def test_settings_need_every_apns_companion(tmp_path):
    key = _p8(tmp_path)
    with pytest.raises(ConfigError, match="SMARTSVC_APNS_TEAM_ID"):
        load_settings({"SMARTSVC_VAR_DIR": str(tmp_path), "SMARTSVC_APNS_KEY_FILE": str(key),
                       "SMARTSVC_APNS_KEY_ID": "KEY1234567", "SMARTSVC_APNS_TOPIC": "com.example.parking"})
    with pytest.raises(ConfigError, match="SMARTSVC_APNS_KEY_FILE"):
        load_settings({"SMARTSVC_VAR_DIR": str(tmp_path), "SMARTSVC_APNS_KEY_FILE": str(tmp_path / "missing.p8"),
                       "SMARTSVC_APNS_KEY_ID": "K", "SMARTSVC_APNS_TEAM_ID": "T", "SMARTSVC_APNS_TOPIC": "t"})
    settings = load_settings({
        "SMARTSVC_VAR_DIR": str(tmp_path), "SMARTSVC_APNS_KEY_FILE": str(key), "SMARTSVC_APNS_KEY_ID": "KEY1234567",
        "SMARTSVC_APNS_TEAM_ID": "TEAM123456", "SMARTSVC_APNS_TOPIC": "com.example.parking",
        "SMARTSVC_APNS_URL": "https://api.sandbox.push.apple.com/"})
    assert (settings.apns_url, settings.apns_key_file) == ("https://api.sandbox.push.apple.com", key)
