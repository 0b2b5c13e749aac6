"""The Web Push provider (RFC 8030 delivery, RFC 8291 ``aes128gcm`` encryption, RFC 8292 VAPID).

The payload (:meth:`PushMessage.data` as JSON) is encrypted for the
subscription's keys by pywebpush and signed for with a VAPID JWT by
py_vapid; this module does the HTTP: one pooled client, no redirects, and
endpoints that resolve to private addresses refused (a subscription's
endpoint is a URL a user chose).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
import logging
import re
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import httpx
from py_vapid import Vapid02, VapidException

from ..config import ConfigError, Settings
from .cache import ProviderCache
from .httpcommon import elapsed_ms, load_signing_key, parse_retry_after, tls_context
from .message import MAX_PAYLOAD_BYTES, PushMessage, PushResult, fit_payload

log = logging.getLogger(__name__)

# aes128gcm adds a 86-byte header (salt, record size, key id length, 65-byte key), a 16-byte tag and
# the 1-byte padding delimiter; the encrypted body must stay within the 4 KB push services accept.
MAX_PLAINTEXT_BYTES = MAX_PAYLOAD_BYTES - 86 - 16 - 1
VAPID_LIFETIME_S = 12 * 3600  # RFC 8292: at most 24 h
VAPID_RENEW_BEFORE_S = 3600
MAX_TTL_S = 28 * 86400  # what push services keep a message at most
MAX_TOPIC_CHARS = 32
_TOPIC = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
URGENCY = "normal"


def topic(collapse_key: str) -> str:
    """The ``Topic`` header: the collapse key when it is ≤ 32 base64url characters, else a hash that is."""
    if _TOPIC.match(collapse_key):
        return collapse_key
    digest = base64.urlsafe_b64encode(hashlib.sha256(collapse_key.encode()).digest()).decode().rstrip("=")
    return digest[:MAX_TOPIC_CHARS]


def encode_payload(message: PushMessage) -> bytes:
    """The plaintext the browser's service worker receives: :meth:`PushMessage.data` as compact JSON."""
    return json.dumps(message.data(), ensure_ascii=False, separators=(",", ":")).encode()


def ttl_seconds(message: PushMessage, now: float) -> int:
    """``TTL``: seconds until the suggestion expires (0: deliver now or never)."""
    return int(min(max(message.expires_at.timestamp() - now, 0), MAX_TTL_S))


def encrypt(subscription: dict[str, Any], plaintext: bytes) -> bytes:
    """``plaintext`` encrypted (``aes128gcm``) for the subscription's ``p256dh`` and ``auth`` keys.

    ValueError when the keys are unusable.
    """
    from pywebpush import WebPusher, WebPushException  # imports aiohttp: only where Web Push is configured

    try:
        return WebPusher(subscription).encode(plaintext, "aes128gcm")["body"]
    except (WebPushException, binascii.Error, ValueError, TypeError) as exc:
        raise ValueError(f"subscription keys are unusable: {exc}") from None


def origin(endpoint: str) -> str:
    """``scheme://host[:port]`` of an endpoint (the VAPID audience)."""
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc}"


class VapidSigner:
    """The ``Authorization: vapid t=…,k=…`` header per push-service origin, re-signed an hour before it expires."""

    def __init__(self, pem: bytes, subject: str, clock: Callable[[], float] = time.time) -> None:
        self._vapid = Vapid02(private_key=load_signing_key(pem, "the VAPID key"))
        self.subject, self._clock = subject, clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, str]] = {}

    def header(self, audience: str) -> str:
        """The header for pushes to ``audience``; VapidException when the subject or audience is not valid."""
        now = self._clock()
        with self._lock:
            cached = self._cache.get(audience)
            if cached is not None and cached[0] - now > VAPID_RENEW_BEFORE_S:
                return cached[1]
            expires = int(now) + VAPID_LIFETIME_S
            value = self._vapid.sign({"aud": audience, "exp": expires, "sub": self.subject})["Authorization"]
            if len(self._cache) > 1000:  # push services are a handful; never grow without bound
                self._cache.clear()
            self._cache[audience] = (expires, value)
            return value


def refuse_reason(endpoint: str, allow_private: bool) -> str | None:
    """Why pushing to ``endpoint`` is refused (not https, or resolves to a non-public address), or None."""
    parts = urlsplit(endpoint)
    if parts.scheme != "https" or not parts.hostname:
        return "endpoint is not an https URL"
    if allow_private:
        return None
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise OSError(f"cannot resolve {parts.hostname}: {exc}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if not address.is_global:
            return f"endpoint resolves to a non-public address ({address})"
    return None


@dataclass(frozen=True)
class WebPushConfig:
    """What the Web Push provider needs from the settings."""

    vapid_pem: bytes
    subject: str
    ca_file: Path | None = None
    allow_private: bool = False
    timeout_s: float = 10.0


def result_of(response: httpx.Response, latency_ms: int) -> PushResult:
    """What a push service's answer means for the push and the subscription."""
    status = response.status_code
    if status in (200, 201, 202):
        return PushResult("sent", latency_ms, status_code=status)
    error = f"Web Push {status} {response.reason_phrase}".strip()
    if status in (404, 410):
        return PushResult("failed", latency_ms, error=error, token_dead=True, status_code=status)
    if status == 429 or status >= 500:
        return PushResult("failed", latency_ms, error=error, retryable=True,
                          retry_after_s=parse_retry_after(response.headers.get("retry-after")), status_code=status)
    return PushResult("failed", latency_ms, error=error, status_code=status)


class WebPushProvider:
    """Encrypts and POSTs pushes to Web Push subscriptions; never raises for a failed push."""

    name = "webpush"

    def __init__(self, config: WebPushConfig, clock: Callable[[], float] = time.time) -> None:
        self.config, self._clock = config, clock
        self.signer = VapidSigner(config.vapid_pem, config.subject, clock)
        try:
            self.signer.header("https://push.example.com")  # a bad subject fails now, not at every push
        except VapidException as exc:
            raise ConfigError(f"SMARTSVC_VAPID_SUBJECT={config.subject!r} is not accepted: {exc}") from None
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def _http(self) -> httpx.Client:
        with self._lock:  # created on first use: after a worker forks, never before
            if self._client is None:
                self._client = httpx.Client(verify=tls_context(self.config.ca_file), follow_redirects=False,
                                            timeout=httpx.Timeout(self.config.timeout_s))
            return self._client

    def close(self) -> None:
        """Close the pooled connections (a later send opens new ones)."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def request(self, message: PushMessage) -> tuple[str, dict[str, str], bytes]:
        """Endpoint, headers and encrypted body of one push (ValueError when the subscription is unusable)."""
        subscription: dict[str, Any] = message.subscription or {}
        endpoint = subscription.get("endpoint")
        if not isinstance(endpoint, str) or not endpoint:
            raise ValueError("device has no Web Push subscription endpoint")
        message = fit_payload(message, MAX_PLAINTEXT_BYTES)
        body = encrypt(subscription, encode_payload(message))
        try:
            authorization = self.signer.header(origin(endpoint))
        except VapidException as exc:
            raise ValueError(f"cannot sign for {origin(endpoint)}: {exc}") from None
        headers = {
            "authorization": authorization, "ttl": str(ttl_seconds(message, self._clock())),
            "urgency": URGENCY, "topic": topic(message.collapse_key),
            "content-encoding": "aes128gcm", "content-type": "application/octet-stream",
        }
        return endpoint, headers, body

    def send(self, message: PushMessage) -> PushResult:
        """Encrypt ``message`` for its subscription and POST it to the subscription's endpoint."""
        started = time.perf_counter()
        try:
            endpoint, headers, body = self.request(message)
        except ValueError as exc:
            return PushResult("failed", elapsed_ms(started), error=str(exc))
        try:
            refused = refuse_reason(endpoint, self.config.allow_private)
        except OSError as exc:
            return PushResult("failed", elapsed_ms(started), error=f"Web Push unreachable: {exc}", retryable=True)
        if refused:
            return PushResult("failed", elapsed_ms(started), error=refused)
        try:
            response = self._http().post(endpoint, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return PushResult("failed", elapsed_ms(started),
                              error=f"Web Push unreachable: {type(exc).__name__}: {exc}", retryable=True)
        result = result_of(response, elapsed_ms(started))
        if not result.ok:
            log.info("push service refused a push", extra={"status": result.status_code, "error": result.error})
        return result


def webpush_config(settings: Settings) -> WebPushConfig | None:
    """The Web Push settings, or None when Web Push is not configured (no VAPID key)."""
    if settings.vapid_private_key is None:
        return None
    try:
        pem = Path(settings.vapid_private_key).read_bytes()
    except OSError as exc:
        raise ConfigError(f"SMARTSVC_VAPID_PRIVATE_KEY={settings.vapid_private_key}: cannot read it: {exc}") from None
    return WebPushConfig(vapid_pem=pem, subject=settings.vapid_subject, ca_file=settings.webpush_ca_file,
                         allow_private=settings.webpush_allow_private)


# One provider (one connection pool, one token) per configuration and process.
_PROVIDERS: ProviderCache[WebPushProvider] = ProviderCache()


def _provider(config: WebPushConfig) -> WebPushProvider:
    return _PROVIDERS.get(config, lambda: WebPushProvider(config))


def webpush_provider(settings: Settings) -> WebPushProvider | None:
    """The Web Push provider of ``settings`` (shared per configuration), or None when not configured."""
    config = webpush_config(settings)
    if config is None:
        return None
    try:
        return _provider(config)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"SMARTSVC_VAPID_PRIVATE_KEY={settings.vapid_private_key}: {exc}") from None


def close_webpush_provider(settings: Settings) -> None:
    """Close the connections of this process's Web Push provider for ``settings`` (none built: nothing to do)."""
    _PROVIDERS.close_configured(lambda: webpush_config(settings))
