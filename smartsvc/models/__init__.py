"""SQLAlchemy 2 typed mappings of everything the service stores."""

from .base import Base
from .context import ContextEvent, UserContext
from .geodata import DATASET_FORMATS, DATASET_STATUSES, LAYERS, Dataset, LayerFeature, LiveLayer
from .geofences import GEOFENCE_KINDS, GeofenceRecord, GeofenceVersion, UserGeofenceState
from .help import HELP_AUTHORS, HELP_STATUSES, HelpCase, HelpMessage
from .keys import KEY_ROLES, ApiKey
from .outbox import IdempotencyRecord, OutboxMessage
from .products import PRODUCT_KINDS, OwnedProduct, ProductModel, TelemetryReading
from .rules import Rule, RuleVersion, UserRuleScore
from .suggestions import DELIVERY_STATUSES, SUGGESTION_STATUSES, Interaction, PushAttempt, Suggestion
from .triggers import TriggerRecord
from .users import CONSENT_PURPOSES, DEVICE_PLATFORMS, Consent, ConsentEvent, Device, User
from .webhooks import SharingLedgerEntry, WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookNotice

__all__ = [
    "Base",
    "ApiKey",
    "DATASET_FORMATS",
    "DATASET_STATUSES",
    "LAYERS",
    "Dataset",
    "LayerFeature",
    "LiveLayer",
    "GEOFENCE_KINDS",
    "GeofenceRecord",
    "GeofenceVersion",
    "UserGeofenceState",
    "HELP_AUTHORS",
    "HELP_STATUSES",
    "HelpCase",
    "HelpMessage",
    "KEY_ROLES",
    "IdempotencyRecord",
    "OutboxMessage",
    "PRODUCT_KINDS",
    "OwnedProduct",
    "ProductModel",
    "TelemetryReading",
    "Rule",
    "RuleVersion",
    "UserRuleScore",
    "DELIVERY_STATUSES",
    "SUGGESTION_STATUSES",
    "Interaction",
    "PushAttempt",
    "Suggestion",
    "TriggerRecord",
    "ContextEvent",
    "UserContext",
    "CONSENT_PURPOSES",
    "DEVICE_PLATFORMS",
    "Consent",
    "ConsentEvent",
    "Device",
    "User",
    "SharingLedgerEntry",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookNotice",
]
