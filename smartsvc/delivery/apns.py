"""The APNs push provider: HTTP/2 with token (.p8, ES256) authentication (DELIVERY.md "Pushes").

One pooled HTTP/2 client per provider; the provider token (a JWT naming the
team and key) is signed once and reused for :data:`TOKEN_REUSE_S`, because
Apple refuses tokens older than an hour and more than one refresh per 20
minutes. Each push is ``POST /3/device/{token}`` with the ``apns-*`` headers
and an ``aps`` alert plus the suggestion's ids.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from ..config import ConfigError, Settings
from .cache import ProviderCache
from .httpcommon import elapsed_ms, load_signing_key, parse_retry_after, tls_context
from .message import MAX_PAYLOAD_BYTES, PushMessage, PushResult, fit_payload

log = logging.getLogger(__name__)

DEFAULT_URL = "https://api.push.apple.com"
# Apple: a provider token is valid for an hour and may be refreshed at most every 20 minutes.
TOKEN_REUSE_S = 50 * 60
MAX_COLLAPSE_ID_BYTES = 64
# Alerts are shown at once (10); 5 would let the phone batch them for power (background pushes).
ALERT_PRIORITY = "10"


class ProviderToken:
    """The provider JWT (ES256; ``iss`` team id, ``iat``; header ``kid``), signed once per :data:`TOKEN_REUSE_S`."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, key_id: str, team_id: str,
                 clock: Callable[[], float] = time.time) -> None:
        self._key, self._key_id, self._team_id, self._clock = key, key_id, team_id, clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._issued_at = 0.0

    def _sign(self) -> None:
        now = self._clock()
        self._token = jwt.encode({"iss": self._team_id, "iat": int(now)}, self._key, algorithm="ES256",
                                 headers={"kid": self._key_id})
        self._issued_at = now

    def current(self) -> str:
        """The token to send now (signed anew once the old one is :data:`TOKEN_REUSE_S` old)."""
        with self._lock:
            if self._token is None or self._clock() - self._issued_at >= TOKEN_REUSE_S:
                self._sign()
            assert self._token is not None
            return self._token

    def refresh(self, rejected: str) -> str:
        """A new token after APNs called ``rejected`` expired (unless another thread already replaced it)."""
        with self._lock:
            if self._token == rejected:
                self._sign()
            assert self._token is not None
            return self._token


@dataclass(frozen=True)
class ApnsConfig:
    """What the APNs provider needs from the settings."""

    url: str
    key_pem: bytes
    key_id: str
    team_id: str
    topic: str
    ca_file: Path | None = None
    timeout_s: float = 10.0


def collapse_id(collapse_key: str) -> str:
    """``apns-collapse-id``: the collapse key, or its SHA-256 (64 hex digits) when longer than 64 bytes."""
    if len(collapse_key.encode()) <= MAX_COLLAPSE_ID_BYTES:
        return collapse_key
    return hashlib.sha256(collapse_key.encode()).hexdigest()


def apns_payload(message: PushMessage) -> dict[str, Any]:
    """The JSON body: the alert (title, body) under ``aps`` and the ids of :meth:`PushMessage.data` beside it."""
    data = message.data()
    alert = {"title": data.pop("title"), "body": data.pop("body")}
    return {"aps": {"alert": alert}, **data}


def encode_payload(message: PushMessage) -> bytes:
    """:func:`apns_payload` as compact UTF-8 JSON."""
    return json.dumps(apns_payload(message), ensure_ascii=False, separators=(",", ":")).encode()


def fit_apns(message: PushMessage, limit: int = MAX_PAYLOAD_BYTES) -> PushMessage:
    """``message`` with the body (then the title) trimmed until its APNs body is at most ``limit`` bytes."""
    for _ in range(4):  # the two encodings differ by a near-constant; one pass nearly always suffices
        excess = len(encode_payload(message)) - limit
        if excess <= 0:
            break
        message = fit_payload(message, max(message.encoded_size() - excess, 0))
    return message


def apns_headers(message: PushMessage, topic: str) -> dict[str, str]:
    """The ``apns-*`` headers of one push (without ``authorization``)."""
    return {
        "apns-topic": topic,
        "apns-push-type": "alert",
        "apns-priority": ALERT_PRIORITY,
        "apns-expiration": str(max(int(message.expires_at.timestamp()), 0)),
        "apns-collapse-id": collapse_id(message.collapse_key),
    }


def _reason(response: httpx.Response) -> tuple[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return "", None
    if not isinstance(body, dict):
        return "", None
    return str(body.get("reason") or ""), body.get("timestamp")


def _dead_since(timestamp: Any) -> datetime | None:
    """APNs' ``timestamp`` (milliseconds since the epoch) as an aware UTC time."""
    if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)):
        return None
    try:
        return datetime.fromtimestamp(timestamp / 1000, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


def result_of(response: httpx.Response, latency_ms: int) -> PushResult:
    """What an APNs answer means for the push and the device."""
    status = response.status_code
    if status == 200:
        return PushResult("sent", latency_ms, status_code=status)
    reason, timestamp = _reason(response)
    error = f"APNs {status} {reason or response.reason_phrase}".strip()
    if status == 410 or (status == 400 and reason == "BadDeviceToken"):
        return PushResult("failed", latency_ms, error=error, token_dead=True,
                          token_dead_since=_dead_since(timestamp) if status == 410 else None, status_code=status)
    if status == 429 or status >= 500:
        return PushResult("failed", latency_ms, error=error, retryable=True,
                          retry_after_s=parse_retry_after(response.headers.get("retry-after")), status_code=status)
    return PushResult("failed", latency_ms, error=error, status_code=status)


class ApnsProvider:
    """Sends pushes to APNs over one pooled HTTP/2 connection; never raises for a failed push."""

    name = "apns"

    def __init__(self, config: ApnsConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.token = ProviderToken(load_signing_key(config.key_pem, "the APNs key"), config.key_id,
                                   config.team_id, clock)
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def _http(self) -> httpx.Client:
        with self._lock:  # created on first use: after a worker forks, never before
            if self._client is None:
                self._client = httpx.Client(
                    http2=True, base_url=self.config.url, verify=tls_context(self.config.ca_file),
                    timeout=httpx.Timeout(self.config.timeout_s), follow_redirects=False)
            return self._client

    def close(self) -> None:
        """Close the pooled connection (a later send opens a new one)."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _post(self, path: str, headers: dict[str, str], body: bytes, token: str) -> httpx.Response:
        return self._http().post(path, content=body, headers={
            **headers, "authorization": f"bearer {token}", "content-type": "application/json"})

    def send(self, message: PushMessage) -> PushResult:
        """POST the push to ``/3/device/{token}``; 403 ExpiredProviderToken re-signs the JWT once and retries."""
        started = time.perf_counter()
        if not message.token:
            return PushResult("failed", elapsed_ms(started), error="device has no APNs token")
        message = fit_apns(message)
        body, headers = encode_payload(message), apns_headers(message, self.config.topic)
        path = "/3/device/" + quote(message.token, safe="")
        token = self.token.current()
        try:
            response = self._post(path, headers, body, token)
            if response.status_code == 403 and _reason(response)[0] == "ExpiredProviderToken":
                response = self._post(path, headers, body, self.token.refresh(token))
        except httpx.HTTPError as exc:
            return PushResult("failed", elapsed_ms(started), error=f"APNs unreachable: {type(exc).__name__}: {exc}",
                              retryable=True)
        result = result_of(response, elapsed_ms(started))
        if not result.ok:
            log.info("APNs refused a push", extra={"status": result.status_code, "error": result.error})
        return result


def apns_config(settings: Settings) -> ApnsConfig | None:
    """The APNs settings, or None when APNs is not configured (no key file)."""
    if settings.apns_key_file is None:
        return None
    try:
        pem = Path(settings.apns_key_file).read_bytes()
    except OSError as exc:
        raise ConfigError(f"SMARTSVC_APNS_KEY_FILE={settings.apns_key_file}: cannot read it: {exc}") from None
    return ApnsConfig(url=settings.apns_url, key_pem=pem, key_id=settings.apns_key_id,
                      team_id=settings.apns_team_id, topic=settings.apns_topic, ca_file=settings.apns_ca_file)


# One provider (one connection pool, one token) per configuration and process.
_PROVIDERS: ProviderCache[ApnsProvider] = ProviderCache()


def _provider(config: ApnsConfig) -> ApnsProvider:
    return _PROVIDERS.get(config, lambda: ApnsProvider(config))


def apns_provider(settings: Settings) -> ApnsProvider | None:
    """The APNs provider of ``settings`` (shared per configuration), or None when APNs is not configured."""
    config = apns_config(settings)
    if config is None:
        return None
    try:
        return _provider(config)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"SMARTSVC_APNS_KEY_FILE={settings.apns_key_file}: {exc}") from None


def close_apns_provider(settings: Settings) -> None:
    """Close the connections of this process's APNs provider for ``settings`` (none built: nothing to do)."""
    _PROVIDERS.close_configured(lambda: apns_config(settings))
