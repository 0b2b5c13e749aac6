"""SQLAlchemy 2 typed mappings of everything the service stores."""

from .base import Base
from .keys import KEY_ROLES, ApiKey
from .outbox import IdempotencyRecord, OutboxMessage
from .products import PRODUCT_KINDS, OwnedProduct, ProductModel, TelemetryReading
from .users import CONSENT_PURPOSES, DEVICE_PLATFORMS, Consent, ConsentEvent, Device, User

__all__ = [
    "Base",
    "ApiKey",
    "KEY_ROLES",
    "IdempotencyRecord",
    "OutboxMessage",
    "PRODUCT_KINDS",
    "OwnedProduct",
    "ProductModel",
    "TelemetryReading",
    "CONSENT_PURPOSES",
    "DEVICE_PLATFORMS",
    "Consent",
    "ConsentEvent",
    "Device",
    "User",
]
