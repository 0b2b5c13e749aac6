"""The provider interface and the choice of a provider per device.

A device is delivered by its platform's provider when that provider is
configured (DELIVERY.md), otherwise by the ``log`` provider. Each platform
has a factory that returns its provider, or None when the settings do not
configure it; FCM, APNs and Web Push add theirs to ``_PLATFORM_FACTORIES``.

The providers are shared per configuration within a process and keep
connections open; :func:`close_providers` (a container's ``close``) and
:func:`close_all_providers` (process exit) close them. A closed provider
opens new connections when it is used again.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from ..config import Settings
from .apns import apns_provider, close_apns_provider
from .cache import close_every_provider
from .fcm import close_fcm_provider, fcm_provider
from .log import LogProvider
from .message import PushMessage, PushResult
from .webpush import close_webpush_provider, webpush_provider


class PushProvider(Protocol):
    """Sends one push; never raises for a failed push (the result says so).

    A provider may also have ``send_many(messages) -> list[PushResult]`` (one result per message, in
    order) that sends several at once; :func:`smartsvc.services.delivery.send_claims` loops over
    :meth:`send` for those that have not.
    """

    #: Recorded with each attempt (``log``, ``fcm``, ``apns``, ``webpush``).
    name: str

    def send(self, message: PushMessage) -> PushResult:
        """Send ``message`` (already within the payload limit) and report the outcome."""
        ...


ProviderFactory = Callable[[Settings], "PushProvider | None"]

# platform -> factory; a factory returns None when its settings are not there (the log provider then).
_PLATFORM_FACTORIES: dict[str, ProviderFactory] = {
    "fcm": fcm_provider,
    "apns": apns_provider,
    "webpush": webpush_provider,
}


def provider_for(device: Any, settings: Settings) -> PushProvider:
    """The provider that delivers to ``device`` (anything with a ``platform``) under ``settings``."""
    if settings.push_provider != "log":
        factory = _PLATFORM_FACTORIES.get(device.platform)
        provider = factory(settings) if factory is not None else None
        if provider is not None:
            return provider
    return LogProvider(settings.pushes_log_path)


def close_providers(settings: Settings) -> None:
    """Close the connections of this process's providers configured by ``settings`` (idempotent)."""
    close_fcm_provider(settings)
    close_apns_provider(settings)
    close_webpush_provider(settings)


def close_all_providers() -> None:
    """Close the connections of every provider this process built (at exit; idempotent)."""
    close_every_provider()
