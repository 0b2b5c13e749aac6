"""The FCM HTTP v1 push provider (DELIVERY.md "Pushes").

One ``POST {url}/v1/projects/{project}/messages:send`` per push, shaped per
the ``projects.messages.send`` schema (Google's ``fcm.v1`` discovery
document): the token, the data payload (strings only), a notification, and
the Android and APNs overrides that carry the collapse key, the time to live
and the priority. The OAuth token comes from the service-account file and is
reused until near expiry. Requests go over kept-alive connections
(:mod:`.connections`), many at once from one thread in :meth:`FcmProvider.send_many`. What FCM answers is
mapped onto :class:`PushResult`:
``UNREGISTERED`` or an invalid token → dead token; 429/``QUOTA_EXCEEDED``,
5xx and network errors → retry later (``Retry-After`` honoured); any other
refusal → failed for good.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlsplit

import httpx
from google.auth import exceptions as auth_exceptions

from ..config import Settings
from .google_oauth import CredentialsFileError, ServiceAccountTokens
from .cache import ProviderCache
from .connections import Exchange, KeptAliveConnections
from .message import MAX_PAYLOAD_BYTES, PushMessage, PushResult, fit_payload, json_size_bound

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
SEND_TIMEOUT_S = 10.0
# Requests in flight at once in send_many (each on its own kept-alive connection): FCM answers in tens of
# milliseconds, so a batch of 200 takes about 200 / 16 of those.
SEND_CONCURRENCY = 16
# send_many sends nothing more after this long (FCM unreachable: each request may wait SEND_TIMEOUT_S);
# what is left fails as retryable, well within the task's time limit.
SEND_MANY_BUDGET_S = 30.0
APNS_COLLAPSE_ID_MAX_BYTES = 64
# A suggestion is time-critical ("spots before arrival"): wake the phone.
ANDROID_PRIORITY = "HIGH"
APNS_PRIORITY = "10"
MAX_RETRY_AFTER_S = 86400.0


def apns_collapse_id(collapse_key: str) -> str:
    """The key itself when it fits APNs' 64 bytes, else its SHA-256 in hex (64 characters, the same for equal keys)."""
    if len(collapse_key.encode()) <= APNS_COLLAPSE_ID_MAX_BYTES:
        return collapse_key
    return hashlib.sha256(collapse_key.encode()).hexdigest()


def build_request(message: PushMessage) -> dict[str, Any]:
    """The ``SendMessageRequest`` body for ``message`` (camelCase field names, as in the discovery document)."""
    ttl_s = max(0, math.ceil((message.expires_at - message.at).total_seconds()))
    return {"message": {
        "token": message.token or "",
        "data": {key: str(value) for key, value in message.data().items()},
        "notification": {"title": message.title, "body": message.body},
        "android": {"collapseKey": message.collapse_key, "ttl": f"{ttl_s}s", "priority": ANDROID_PRIORITY},
        "apns": {"headers": {
            "apns-collapse-id": apns_collapse_id(message.collapse_key),
            "apns-expiration": str(int(message.expires_at.timestamp())),
            "apns-priority": APNS_PRIORITY,
            "apns-push-type": "alert",
        }},
    }}


def payload_size(request: dict[str, Any]) -> int:
    """Bytes FCM counts against its 4 KB limit: the data and the notification, as compact UTF-8 JSON."""
    message = request["message"]
    return sum(len(json.dumps(message.get(part, {}), ensure_ascii=False, separators=(",", ":")).encode())
               for part in ("data", "notification"))


def fit_fcm(message: PushMessage, limit: int = MAX_PAYLOAD_BYTES) -> PushMessage:
    """``message`` trimmed (body first, never the ids) so that its FCM data and notification fit ``limit`` bytes.

    The notification repeats the title and body of the data, so the data
    alone gets a smaller share: the largest share that keeps the whole within
    ``limit`` is found by bisection.
    """
    if payload_size(build_request(message)) <= limit:
        return message
    low, high = 0, limit  # ``low``: a data budget known to fit (0 trims everything it can)
    while low < high:
        middle = (low + high + 1) // 2
        if payload_size(build_request(fit_payload(message, middle))) <= limit:
            low = middle
        else:
            high = middle - 1
    return fit_payload(message, low)


def fitted_request(message: PushMessage, limit: int = MAX_PAYLOAD_BYTES) -> dict[str, Any]:
    """``build_request(fit_fcm(message))``, the request built once when the message fits (nearly always)."""
    request = build_request(message)
    parts = request["message"]
    if json_size_bound(parts["data"], parts["notification"]) <= limit or payload_size(request) <= limit:
        return request
    return build_request(fit_fcm(message, limit))


def _retry_after(response: Any) -> float | None:
    raw = response.headers.get("retry-after")
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _google_error(response: Any) -> tuple[str, str, list[dict[str, Any]]]:
    """(FCM error code or Google status, message, details) of an error response; tolerant of any body."""
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    if not isinstance(error, dict):
        error = {}
    details = [d for d in error.get("details") or [] if isinstance(d, dict)]
    code = next((d.get("errorCode") for d in details if str(d.get("@type", "")).endswith("FcmError")
                 and d.get("errorCode")), None) or error.get("status") or response.reason_phrase or "ERROR"
    return str(code), str(error.get("message") or response.text[:200]), details


def _about_the_token(message: str, details: list[dict[str, Any]]) -> bool:
    fields = {str(v.get("field", "")) for d in details for v in d.get("fieldViolations") or [] if isinstance(v, dict)}
    return "message.token" in fields or "registration token" in message.lower()


def interpret(response: Any, latency_ms: int) -> PushResult:
    """What an answer of ``messages:send`` means for the push and the device.

    ``response``: an httpx response or anything with its ``status_code``, ``headers``, ``json()``,
    ``reason_phrase`` and ``text``."""
    status = response.status_code
    if 200 <= status < 300:
        return PushResult("sent", latency_ms, status_code=status)
    code, text, details = _google_error(response)
    error = f"{code} ({status}): {text}"[:2000]
    # Only FCM's own verdict kills a token: a bare 404 (a wrong URL or project) must not deactivate every device.
    if code == "UNREGISTERED":
        return PushResult("failed", latency_ms, error=error, token_dead=True, status_code=status)
    if code == "INVALID_ARGUMENT" and _about_the_token(text, details):
        return PushResult("failed", latency_ms, error=error, token_dead=True, status_code=status)
    if status == 429 or code == "QUOTA_EXCEEDED" or status >= 500:
        return PushResult("failed", latency_ms, error=error, retryable=True, retry_after_s=_retry_after(response),
                          status_code=status)
    return PushResult("failed", latency_ms, error=error, status_code=status)


class FcmProvider:
    """Sends pushes through FCM HTTP v1 over kept-alive connections, with one cached OAuth token.

    :meth:`send_many` keeps up to :data:`SEND_CONCURRENCY` requests in flight from the calling thread, each
    on its own connection (:class:`.connections.KeptAliveConnections`). The OAuth token is fetched (rarely)
    with google-auth over an httpx client. :meth:`close` closes the connections; a later send opens new
    ones (the token is kept).
    """

    name = "fcm"

    def __init__(self, url: str, credentials: Path, project_id: str = "",
                 client: httpx.Client | None = None, concurrency: int = SEND_CONCURRENCY) -> None:
        self.url = url.rstrip("/")
        # An injected client is the caller's (never closed here); our own is opened on use, again after close().
        self._given_client = client
        self._client: httpx.Client | None = None
        self._tokens = ServiceAccountTokens(credentials, [FCM_SCOPE], self._http)
        self._project_id = project_id
        self._connections = KeptAliveConnections(self.url, SEND_TIMEOUT_S)
        self._prefix = urlsplit(self.url).path
        self._concurrency = max(1, concurrency)
        self._lock = threading.Lock()

    def _http(self) -> httpx.Client:
        if self._given_client is not None:
            return self._given_client
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(timeout=SEND_TIMEOUT_S, follow_redirects=False)
            return self._client

    def _endpoint(self) -> str:
        project = self._project_id or self._tokens.project_id
        if not project:
            raise CredentialsFileError("no Firebase project: set SMARTSVC_FCM_PROJECT_ID "
                                       "or use a credentials file with a project_id")
        return f"{self._prefix}/v1/projects/{project}/messages:send"

    def send(self, message: PushMessage) -> PushResult:
        """Send one push; never raises (network, OAuth and FCM errors become the result)."""
        return self.send_many([message])[0]

    def send_many(self, messages: Sequence[PushMessage]) -> list[PushResult]:
        """Send several pushes, up to :data:`SEND_CONCURRENCY` at a time; one result per message, in order.
        Never raises.

        A 401 (the token revoked or expired early) sends those pushes once more with a fresh token. After
        :data:`SEND_MANY_BUDGET_S` the pushes not sent yet fail as retryable (tried again later)."""
        started = time.perf_counter()
        deadline = time.monotonic() + SEND_MANY_BUDGET_S
        bodies = [json.dumps(fitted_request(message), ensure_ascii=False).encode() for message in messages]
        results: list[PushResult | None] = [None] * len(messages)
        todo = list(range(len(messages)))
        for fresh_token in (False, True):
            try:
                if fresh_token:
                    self._tokens.forget()
                headers = {"Authorization": f"Bearer {self._tokens.token()}",
                           "Content-Type": "application/json; charset=UTF-8"}
                exchanges = self._connections.post_many(self._endpoint(), [(bodies[i], headers) for i in todo],
                                                        self._concurrency, deadline)
            except CredentialsFileError as exc:
                return _fill(results, todo, PushResult("failed", _elapsed_ms(started), error=str(exc)[:2000]))
            except auth_exceptions.RefreshError as exc:  # the token endpoint refused (bad key) or failed
                return _fill(results, todo, PushResult("failed", _elapsed_ms(started),
                                                       error=f"OAuth token: {exc}"[:2000],
                                                       retryable=bool(getattr(exc, "retryable", False))))
            except auth_exceptions.TransportError as exc:
                return _fill(results, todo, _network_failure(exc, _elapsed_ms(started)))
            except ValueError as exc:  # a line break in the token the token endpoint gave: never sent
                return _fill(results, todo, PushResult("failed", _elapsed_ms(started), error=str(exc)[:2000]))
            unauthorized = []
            for index, exchange in zip(todo, exchanges):
                if exchange is not None and exchange.response is not None \
                        and exchange.response.status_code == 401 and not fresh_token:
                    unauthorized.append(index)
                else:
                    results[index] = _result(exchange)
            if not unauthorized:
                break
            todo = unauthorized
        return results  # type: ignore[return-value]

    def close(self) -> None:
        """Close the connections (idempotent; a later send opens new ones)."""
        with self._lock:
            client, self._client = self._client, None
        self._connections.close()
        if client is not None:
            client.close()


def _result(exchange: Exchange | None) -> PushResult:
    if exchange is None:
        return PushResult("failed", 0, error="not sent: the batch ran out of time", retryable=True)
    latency_ms = int(round(exchange.elapsed_s * 1000))
    if exchange.error is not None:
        return _network_failure(exchange.error, latency_ms)
    assert exchange.response is not None
    return interpret(exchange.response, latency_ms)


def _network_failure(exc: BaseException, latency_ms: int) -> PushResult:
    return PushResult("failed", latency_ms, error=f"network: {type(exc).__name__}: {exc}"[:2000], retryable=True)


def _fill(results: list[PushResult | None], indexes: Sequence[int], result: PushResult) -> list[PushResult]:
    for index in indexes:
        results[index] = result
    return results  # type: ignore[return-value]


def _elapsed_ms(started: float) -> int:
    return int(round((time.perf_counter() - started) * 1000))


# One provider per process and configuration, so the connection pool and the OAuth token are reused
# across tasks (keyed by the process id too: a forked worker must not share its parent's sockets).
_PROVIDERS: ProviderCache[FcmProvider] = ProviderCache()


def _key(settings: Settings) -> tuple[Any, ...] | None:
    if settings.fcm_credentials is None:
        return None
    return settings.fcm_url, settings.fcm_project_id, str(Path(settings.fcm_credentials).resolve())


def fcm_provider(settings: Settings) -> FcmProvider | None:
    """The FCM provider for ``settings``, or None when ``SMARTSVC_FCM_CREDENTIALS`` is not set."""
    key = _key(settings)
    if key is None:
        return None
    return _PROVIDERS.get(key, lambda: FcmProvider(settings.fcm_url, settings.fcm_credentials,  # type: ignore[arg-type]
                                                   settings.fcm_project_id))


def close_fcm_provider(settings: Settings) -> None:
    """Close the connections of this process's FCM provider for ``settings`` (none built: nothing to do)."""
    _PROVIDERS.close_configured(lambda: _key(settings))
