"""What the export never shows in full: device tokens, Web Push subscriptions, credentials in stored answers."""

from __future__ import annotations

from smartsvc.services.export import mask_secrets, mask_subscription, mask_token


def test_a_token_keeps_only_its_last_four_characters():
    assert mask_token("dQw4w9WgXcQ:APA91bH-long-registration-token-abcd") == "****abcd"
    assert mask_token("short") == "****"  # too short to show any of it
    assert mask_token(None) is None


def test_a_subscription_keeps_the_push_services_host_only():
    masked = mask_subscription({"endpoint": "https://updates.push.services.mozilla.com/wpush/v2/gAAAAABk-secret-zz9",
                                "keys": {"p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA",
                                         "auth": "tBHItJI5svbpez7KI4CCXg"}})
    assert masked == {"endpoint": "https://updates.push.services.mozilla.com/****-zz9",
                      "keys": {"p256dh": "****", "auth": "****"}}
    assert "gAAAAABk" not in str(masked)
    assert mask_subscription(None) is None


def test_credentials_in_a_stored_answer_are_masked_at_any_depth():
    body = {"id": "u1", "access_token": "sat_0123456789abcdef", "items": [{"token": "device-token-98765"}],
            "nested": {"secret": "whsec_abcdefghijkl", "keep": "visible"}}
    assert mask_secrets(body) == {"id": "u1", "access_token": "****cdef", "items": [{"token": "****8765"}],
                                  "nested": {"secret": "****ijkl", "keep": "visible"}}
