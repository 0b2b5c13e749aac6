"""Push delivery adapters (DELIVERY.md "Pushes"): one :class:`PushProvider` per platform, chosen by settings.

:func:`provider_for` picks the provider of a device; the ``log`` provider
(the embedded default) writes each push as one JSON line. FCM, APNs and Web
Push providers slot in as further factories in :mod:`.providers`.
"""

from .log import LogProvider
from .message import MAX_PAYLOAD_BYTES, PushMessage, PushResult, fit_payload
from .providers import PushProvider, close_all_providers, close_providers, provider_for

__all__ = ["LogProvider", "MAX_PAYLOAD_BYTES", "PushMessage", "PushResult", "fit_payload", "PushProvider",
           "close_all_providers", "close_providers", "provider_for"]
