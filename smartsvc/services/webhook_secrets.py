"""Webhook signing secrets at rest: encrypted, never shown again after creation or rotation.

An HMAC secret cannot be stored as a hash like an API key: the service
needs it to sign every delivery. It is encrypted with Fernet (AES-128-CBC +
HMAC-SHA256) under a key derived (HKDF-SHA256) from ``SMARTSVC_SECRET_KEY``,
so a copy of the database alone does not reveal it. Changing the secret key
makes the stored secrets unreadable: rotate each webhook's secret then.
"""

from __future__ import annotations

import base64
from datetime import datetime, timedelta

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..config import Settings
from ..models import WebhookEndpoint

# How long the secret before a rotation keeps signing (both signatures are sent meanwhile).
ROTATION_OVERLAP = timedelta(hours=24)
_INFO = b"smartsvc webhook signing secrets v1"


class SecretUnreadable(RuntimeError):
    """A stored secret cannot be decrypted (the service's secret key changed)."""


def _fernet(settings: Settings) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(settings.secret_key.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def encrypt_secret(settings: Settings, secret: str) -> str:
    """The stored form of a signing secret."""
    return _fernet(settings).encrypt(secret.encode()).decode("ascii")


def decrypt_secret(settings: Settings, token: str) -> str:
    """The signing secret back from its stored form."""
    try:
        return _fernet(settings).decrypt(token.encode("ascii")).decode()
    except InvalidToken:
        raise SecretUnreadable("a webhook secret cannot be decrypted: was SMARTSVC_SECRET_KEY changed? "
                               "Rotate the webhook's secret") from None


def active_secrets(settings: Settings, endpoint: WebhookEndpoint, now: datetime) -> list[str]:
    """The secrets that sign a delivery now: the current one, and the previous one for 24 h after a rotation."""
    secrets = [decrypt_secret(settings, endpoint.secret_encrypted)]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret_encrypted and expires is not None and now < expires:
        secrets.append(decrypt_secret(settings, endpoint.previous_secret_encrypted))
    return secrets
