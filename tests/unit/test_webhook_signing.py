"""A partner verifies our webhooks with the standardwebhooks library unchanged, also during a secret rotation."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from smartsvc.timeutil import utcnow
from smartsvc.webhooks.signing import is_valid_secret, new_secret, sign_headers

BODY = b'{"type":"webhook.test","timestamp":"2026-01-01T00:00:00Z","data":{"note":"gr\xc3\xbc\xc3\x9fe"}}'


def test_new_secrets_are_whsec_base64_of_32_random_bytes():
    secrets = {new_secret() for _ in range(50)}
    assert len(secrets) == 50
    for secret in secrets:
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret[len("whsec_"):], validate=True)) == 32
        assert is_valid_secret(secret)


def test_a_partner_verifies_with_the_library_unchanged():
    secret = new_secret()
    headers = sign_headers("msg_2c9f", utcnow(), BODY, [secret])
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(BODY, headers)["data"]["note"] == "grüße"


def test_during_rotation_both_secrets_verify_and_no_other_does():
    old, new = new_secret(), new_secret()
    headers = sign_headers("msg_rot", utcnow(), BODY, [new, old])
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert Webhook(old).verify(BODY, headers)
    assert Webhook(new).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY, headers)


def test_a_changed_body_or_id_does_not_verify():
    secret = new_secret()
    headers = sign_headers("msg_a", utcnow(), BODY, [secret])
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace(b"test", b"tost"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, {**headers, "webhook-id": "msg_b"})


def test_the_standard_webhooks_reference_vector():
    # The example of the Standard Webhooks specification's reference libraries.
    at = datetime.fromtimestamp(1614265330, tz=timezone.utc)
    headers = sign_headers("msg_p5jXN8AQM9LWM0D4loKWxJek", at, b'{"test": 2432232314}',
                           ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])
    assert headers == {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }


def test_a_timestamp_in_another_zone_signs_the_same_instant():
    secret = new_secret()
    at = utcnow().replace(microsecond=0)
    elsewhere = at.astimezone(timezone(timedelta(hours=-5)))
    assert sign_headers("m", elsewhere, BODY, [secret]) == sign_headers("m", at, BODY, [secret])
    assert sign_headers("m", at, BODY, [secret])["webhook-timestamp"] == str(int(at.timestamp()))
    # ... and the partner's clock check (5 minutes) accepts it.
    assert Webhook(secret).verify(BODY, sign_headers("m", elsewhere, BODY, [secret]))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"timestamp": datetime(2026, 1, 1)}, "timezone-aware"),
    ({"secrets": []}, "secrets"),
    ({"secrets": ["not-a-secret"]}, "whsec_"),
    ({"secrets": ["whsec_c2hvcnQ="]}, "whsec_"),  # 5 bytes of key
    ({"message_id": ""}, "message_id"),
    ({"message_id": "a b"}, "message_id"),
    ({"body": b"\xff\xfe"}, "utf-8"),
])
def test_invalid_input_is_refused(kwargs, match):
    args = {"message_id": "m", "timestamp": utcnow(), "body": BODY, "secrets": [new_secret()], **kwargs}
    with pytest.raises(ValueError, match=match):
        sign_headers(**args)
