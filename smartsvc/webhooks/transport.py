"""Sending one webhook request: checked again, pinned to the checked address, bounded in time and size.

:func:`send_webhook` re-runs :func:`~smartsvc.webhooks.ssrf.check_url` at send
time (DNS can change after registration), then connects to exactly the
addresses that check approved — httpx still sends ``Host`` and TLS SNI for the
host name and verifies the certificate for it, only the TCP connect goes to
the pinned IP (:class:`PinnedBackend`). Redirects are never followed, the whole
exchange has one deadline (a server dripping bytes cannot hold a worker), at
most :data:`MAX_RESPONSE_BYTES` of the answer are read, and no network error
escapes: every outcome is a :class:`SendOutcome` for the caller to record and
to decide on retrying.
"""

from __future__ import annotations

import contextlib
import contextvars
import email.utils
import functools
import ssl
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterator

import httpcore
import httpx

from smartsvc.webhooks.ssrf import (
    DestinationUnresolvable,
    Resolver,
    UnsafeDestination,
    check_url,
)

MAX_RESPONSE_BYTES = 64 * 1024
EXCERPT_CHARS = 200
USER_AGENT = "smartsvc-webhooks/1"

# Per send (contextvars are per thread, so one client can serve many threads):
# the checked addresses of each host, and the monotonic deadline of the exchange.
_pins: contextvars.ContextVar[dict[str, tuple[str, ...]] | None] = contextvars.ContextVar("webhook_pins", default=None)
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("webhook_deadline", default=None)


@dataclass(frozen=True)
class SendOutcome:
    """What one attempt gave. ``gone``: HTTP 410 (disable the endpoint); ``unsafe``: refused by the SSRF check."""

    ok: bool
    status_code: int | None
    latency_ms: int
    error: str | None
    retry_after_s: float | None
    gone: bool
    unsafe: bool = False
    response_excerpt: str | None = None


def _remaining(timeout: float | None) -> float | None:
    deadline = _deadline.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every read and write also stops at the send's deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        left = _remaining(timeout)
        if left is not None and left <= 0:
            raise httpcore.ReadTimeout("the webhook's total time limit was reached")
        return self._inner.read(max_bytes, left)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        left = _remaining(timeout)
        if left is not None and left <= 0:
            raise httpcore.WriteTimeout("the webhook's total time limit was reached")
        self._inner.write(buffer, left)

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, _remaining(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class PinnedBackend(httpcore.NetworkBackend):
    """Connects a host name only to the addresses pinned for it by the current send.

    A host with no pinned addresses is refused (fail closed), so a client built
    by :func:`make_client` cannot reach an unchecked address even when misused.
    """

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:
        key = host.strip("[]").rstrip(".").lower()
        addresses = (_pins.get() or {}).get(key)
        if not addresses:
            raise httpcore.ConnectError(f"{host} has no checked address to connect to")
        last_error: Exception | None = None
        for address in addresses:
            left = _remaining(timeout)
            if left is not None and left <= 0:
                raise httpcore.ConnectTimeout("the webhook's total time limit was reached")
            try:
                stream = self._inner.connect_tcp(address, port, left, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
                continue
            return _DeadlineStream(stream)
        assert last_error is not None
        raise last_error

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Any = None) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("webhooks do not connect to Unix sockets")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _PinnedTransport(httpx.HTTPTransport):
    def __init__(self, ssl_context: ssl.SSLContext, max_connections: int) -> None:
        super().__init__(verify=ssl_context)
        # httpx has no public way to give HTTPTransport a network backend; its pool is httpcore's
        # public ConnectionPool, so build that one with ours (tests/integration prove the pinning).
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=30.0,
            network_backend=PinnedBackend(),
        )


@functools.lru_cache(maxsize=1)
def _default_ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle takes tens of milliseconds; one context serves every client and thread.
    return httpx.create_ssl_context(trust_env=True)


class PinnedClient(httpx.Client):
    """An httpx client whose connections go only to addresses a send has checked and pinned."""


def make_client(*, ssl_context: ssl.SSLContext | None = None, max_connections: int = 100,
                transport: httpx.BaseTransport | None = None) -> PinnedClient:
    """A reusable client for :func:`send_webhook` (keep-alive across sends to the same host).

    ``ssl_context``: one trusting other CAs (tests); by default certifi's CAs,
    or ``SSL_CERT_FILE``/``SSL_CERT_DIR`` when set. Certificates are always
    verified. ``transport`` is for tests only (e.g. ``httpx.MockTransport``)
    and bypasses pinning. Proxy variables from the environment are ignored: a
    proxy would connect wherever it likes.
    """
    context = ssl_context or _default_ssl_context()
    return PinnedClient(
        transport=transport or _PinnedTransport(context, max_connections),
        trust_env=False,
        follow_redirects=False,
    )


def send_webhook(url: str, body: bytes, headers: dict[str, str], *, allow_private: bool, allow_http: bool,
                 timeout_s: float = 15.0, resolve: Resolver | None = None,
                 client: PinnedClient | None = None) -> SendOutcome:
    """POST ``body`` to ``url`` once and say how it went; never raises for network trouble.

    ``ok`` for 2xx only (3xx is a failure: redirects are not followed);
    ``retry_after_s`` from ``Retry-After`` on 429/503; ``gone`` for 410;
    ``unsafe`` when the URL is refused now. ``timeout_s`` bounds the whole
    exchange. ``client`` (from :func:`make_client`) is reused when given.
    """
    if client is not None and not isinstance(client, PinnedClient):
        raise TypeError("client: use smartsvc.webhooks.transport.make_client() so connections are pinned")
    started = time.monotonic()
    try:
        dest = check_url(url, allow_private=allow_private, allow_http=allow_http, resolve=resolve)
    except DestinationUnresolvable as exc:
        return _failure(started, str(exc))
    except UnsafeDestination as exc:
        return _failure(started, str(exc), unsafe=True)

    # identity: a compressed answer could inflate far past the read cap.
    request_headers = {"content-type": "application/json", "user-agent": USER_AGENT, "accept-encoding": "identity"}
    request_headers.update({k.lower(): v for k, v in headers.items()})
    request_headers.pop("host", None)  # the Host is the URL's; a caller may not steer it elsewhere
    own_client = client is None
    active = client if client is not None else make_client(max_connections=1)
    pins = _pins.set({**(_pins.get() or {}), dest.host: dest.addresses})
    deadline = _deadline.set(started + timeout_s)
    try:
        with _network_errors() as caught:
            return _exchange(active, dest.url, body, request_headers, timeout_s, started)
        return _failure(started, caught.message)
    finally:
        _deadline.reset(deadline)
        _pins.reset(pins)
        if own_client:
            active.close()


def _exchange(client: httpx.Client, url: str, body: bytes, headers: dict[str, str], timeout_s: float,
              started: float) -> SendOutcome:
    with client.stream("POST", url, content=body, headers=headers, timeout=timeout_s,
                       follow_redirects=False) as response:
        received = bytearray()
        for chunk in response.iter_raw():
            received += chunk[: MAX_RESPONSE_BYTES - len(received)]
            if len(received) >= MAX_RESPONSE_BYTES:
                break  # the rest is never read; closing drops the connection
    latency_ms = _elapsed_ms(started)
    status = response.status_code
    excerpt = _excerpt(bytes(received))
    if 200 <= status < 300:
        return SendOutcome(ok=True, status_code=status, latency_ms=latency_ms, error=None, retry_after_s=None,
                           gone=False, response_excerpt=excerpt)
    if 300 <= status < 400:
        where = response.headers.get("location", "")[:EXCERPT_CHARS]
        error = f"HTTP {status}: redirects are not followed" + (f" (Location: {where})" if where else "")
    else:
        error = f"HTTP {status}" + (f": {excerpt}" if excerpt else "")
    retry_after = None
    if status in (429, 503):
        retry_after = parse_retry_after(response.headers.get("retry-after"))
    return SendOutcome(ok=False, status_code=status, latency_ms=latency_ms, error=error, retry_after_s=retry_after,
                       gone=status == 410, response_excerpt=excerpt)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delay-seconds or an HTTP date); None when absent or invalid."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": RFC 5322 says the zone is unknown; HTTP dates are GMT
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


class _Caught:
    message = ""


@contextlib.contextmanager
def _network_errors() -> Iterator[_Caught]:
    """Turn what the network (or the other end) can do wrong into a message instead of an exception."""
    caught = _Caught()
    try:
        yield caught
    except httpx.TimeoutException as exc:
        caught.message = f"timeout: {_describe(exc) or 'no answer in time'}"
    except httpx.ConnectError as exc:
        caught.message = f"connection failed: {_describe(exc)}"
    except (httpx.HTTPError, httpx.StreamError, ssl.SSLError, OSError) as exc:
        caught.message = f"{type(exc).__name__}: {_describe(exc)}"


def _describe(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:EXCERPT_CHARS]


def _excerpt(data: bytes) -> str | None:
    text = " ".join(data[: EXCERPT_CHARS * 4].decode("utf-8", errors="replace").split())
    return text[:EXCERPT_CHARS] or None


def _elapsed_ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def _failure(started: float, error: str, *, unsafe: bool = False) -> SendOutcome:
    return SendOutcome(ok=False, status_code=None, latency_ms=_elapsed_ms(started), error=error,
                       retry_after_s=None, gone=False, unsafe=unsafe)
