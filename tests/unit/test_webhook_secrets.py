"""Webhook secrets at rest: encrypted under the service key, and which ones sign during a rotation."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from smartsvc.config import Settings
from smartsvc.models import WebhookEndpoint
from smartsvc.services.webhook_secrets import SecretUnreadable, active_secrets, decrypt_secret, encrypt_secret

SETTINGS = Settings(secret_key="a-service-secret-key-of-enough-length-0123")
NOW = datetime(2026, 11, 24, 9, 0, tzinfo=timezone.utc)


def test_a_secret_is_stored_encrypted_and_read_back():
    stored = encrypt_secret(SETTINGS, "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0")
    assert "whsec_" not in stored and "c2VjcmV0" not in stored
    assert decrypt_secret(SETTINGS, stored) == "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"
    assert encrypt_secret(SETTINGS, "whsec_x") != encrypt_secret(SETTINGS, "whsec_x")  # random IV
    with pytest.raises(SecretUnreadable, match="SMARTSVC_SECRET_KEY"):
        decrypt_secret(SETTINGS.replace(secret_key="another-service-secret-key-0123456789"), stored)


def test_the_previous_secret_signs_only_until_it_expires():
    endpoint = WebhookEndpoint(secret_encrypted=encrypt_secret(SETTINGS, "whsec_new"),
                               previous_secret_encrypted=encrypt_secret(SETTINGS, "whsec_old"),
                               previous_secret_expires_at=NOW + timedelta(hours=24))
    assert active_secrets(SETTINGS, endpoint, NOW) == ["whsec_new", "whsec_old"]
    assert active_secrets(SETTINGS, endpoint, NOW + timedelta(hours=24)) == ["whsec_new"]
    endpoint.previous_secret_encrypted = endpoint.previous_secret_expires_at = None
    assert active_secrets(SETTINGS, endpoint, NOW) == ["whsec_new"]
