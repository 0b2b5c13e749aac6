"""Sending one webhook request: checked again, pinned to the checked address, bounded in time and size.

:func:`send_webhook` re-runs :func:`~smartsvc.webhooks.ssrf.check_url` at send
time (DNS can change after registration; :meth:`PinnedClient.check`), then connects to exactly the
addresses that check approved — the request still names the host (``Host``,
TLS SNI) and the certificate is verified for it, only the TCP connect goes to
the pinned IP. Redirects are never followed, the whole exchange has one
deadline (a server dripping bytes cannot hold a worker), at most
:data:`MAX_RESPONSE_BYTES` of the answer are read, and no network error
escapes: every outcome is a :class:`SendOutcome` for the caller to record and
to decide on retrying.

The exchange is one write and reads parsed by httptools, on kept-alive sockets
(:class:`PinnedClient`): a fraction of httpx's CPU per request, which is most
of a batched delivery's cost (BENCHMARKS.md §7).
"""

from __future__ import annotations

import email.utils
import functools
import http.client
import ipaddress
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import certifi

from smartsvc.delivery.connections import Answer, InvalidAnswer
from smartsvc.delivery.httpcommon import idle_connection_dropped
from smartsvc.webhooks.ssrf import (
    Destination,
    DestinationUnresolvable,
    Resolver,
    UnsafeDestination,
    check_url,
)

MAX_RESPONSE_BYTES = 64 * 1024
_READ_SIZE = 16 * 1024
EXCERPT_CHARS = 200
USER_AGENT = "smartsvc-webhooks/1"
_DEFAULT_PORTS = {"https": 443, "http": 80}


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


class _Deadline:
    """The monotonic time by which the whole exchange must be over."""

    def __init__(self, at: float) -> None:
        self.at = at

    def left(self) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            raise TimeoutError("the webhook's total time limit was reached")
        return left


class PinnedClient:
    """Kept-alive connections, each to one checked address of one host; usable from many threads.

    A connection is only ever made to an address in a :class:`Destination`
    that :func:`~smartsvc.webhooks.ssrf.check_url` returned, and reused only
    for a send whose own check pinned that same address.
    """

    MAX_IDLE = 8

    def __init__(self, ssl_context: ssl.SSLContext | None, max_connections: int) -> None:
        self._context = ssl_context
        self._max_idle = max(1, min(max_connections, self.MAX_IDLE))
        self._idle: dict[tuple[str, str, int, tuple[str, ...]], list[socket.socket]] = {}
        self._fixed: dict[tuple[str, bool, bool], Destination] = {}
        self._lock = threading.Lock()

    def check(self, url: str, *, allow_private: bool, allow_http: bool, resolve: Resolver | None) -> Destination:
        """:func:`~smartsvc.webhooks.ssrf.check_url` for this send. A host name is resolved and checked at
        every send (DNS can change); the approval of a URL whose host is an IP address (or ``localhost``),
        which no DNS answer can change, is kept for this client's sends: parsing and classifying it again
        cost ~15 µs of a webhook's ~300 µs of worker CPU (BENCHMARKS.md, 7). A refusal is never kept."""
        key = (url, allow_private, allow_http)
        with self._lock:
            kept = self._fixed.get(key)
        if kept is not None:
            return kept
        dest = check_url(url, allow_private=allow_private, allow_http=allow_http, resolve=resolve)
        if _answers_without_dns(dest.host):
            with self._lock:
                self._fixed[key] = dest
        return dest

    def _key(self, dest: Destination) -> tuple[str, str, int, tuple[str, ...]]:
        return dest.scheme, dest.host, dest.port, dest.addresses

    def connect(self, dest: Destination, deadline: _Deadline) -> socket.socket:
        """A new connection to one of the destination's checked addresses (TLS verified for its host)."""
        if not dest.addresses:
            raise ConnectionError(f"{dest.host} has no checked address to connect to")
        last_error: OSError | None = None
        for address in dest.addresses:
            try:
                sock = socket.create_connection((address, dest.port), timeout=deadline.left())
            except TimeoutError:
                raise
            except OSError as exc:
                last_error = exc
                continue
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if dest.scheme == "https":
                    sock.settimeout(deadline.left())
                    sock = self._tls().wrap_socket(sock, server_hostname=dest.host)
            except BaseException:
                sock.close()
                raise
            return sock
        assert last_error is not None
        raise last_error

    def _tls(self) -> ssl.SSLContext:
        if self._context is None:
            self._context = _default_ssl_context()
        return self._context

    def take(self, dest: Destination, deadline: _Deadline) -> tuple[socket.socket, bool]:
        """A connection for ``dest``, and whether it is a kept-alive one."""
        with self._lock:
            idle = self._idle.get(self._key(dest), [])
            while idle:
                sock = idle.pop()
                if not idle_connection_dropped(sock):
                    return sock, True
                sock.close()
        return self.connect(dest, deadline), False

    def give_back(self, dest: Destination, sock: socket.socket) -> None:
        """Keep ``sock`` for the next send to the same destination (or close it when enough are kept)."""
        with self._lock:
            idle = self._idle.setdefault(self._key(dest), [])
            if len(idle) < self._max_idle:
                idle.append(sock)
                return
        sock.close()

    def close(self) -> None:
        """Close the kept-alive connections."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for socks in idle.values():
            for sock in socks:
                sock.close()


def _answers_without_dns(host: str) -> bool:
    """True for an IP address, and for ``localhost`` names (always loopback, :func:`check_url`)."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=1)
def _default_ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle takes tens of milliseconds; one context serves every client and thread.
    if os.environ.get("SSL_CERT_FILE") or os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context()  # OpenSSL reads them
    return ssl.create_default_context(cafile=certifi.where())


def make_client(*, ssl_context: ssl.SSLContext | None = None, max_connections: int = 8) -> PinnedClient:
    """A reusable client for :func:`send_webhook` (keep-alive across sends to the same host and address).

    ``ssl_context``: one trusting other CAs (tests); by default certifi's CAs,
    or ``SSL_CERT_FILE``/``SSL_CERT_DIR`` when set. Certificates are always
    verified. Proxy variables from the environment are never used: a proxy
    would connect wherever it likes.
    """
    return PinnedClient(ssl_context, max_connections)


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
        if client is not None:
            dest = client.check(url, allow_private=allow_private, allow_http=allow_http, resolve=resolve)
        else:
            dest = check_url(url, allow_private=allow_private, allow_http=allow_http, resolve=resolve)
    except DestinationUnresolvable as exc:
        return _failure(started, str(exc))
    except UnsafeDestination as exc:
        return _failure(started, str(exc), unsafe=True)

    # identity: a compressed answer could inflate far past the read cap.
    request_headers = {"content-type": "application/json", "user-agent": USER_AGENT, "accept-encoding": "identity"}
    request_headers.update({k.lower(): v for k, v in headers.items()})
    request_headers.pop("host", None)  # the Host is the URL's; a caller may not steer it elsewhere
    request_headers.pop("content-length", None)
    own_client = client is None
    active = client if client is not None else make_client(max_connections=1)
    try:
        return _exchange(active, dest, _request_bytes(dest, body, request_headers), _Deadline(started + timeout_s),
                         started)
    except (TimeoutError, socket.timeout) as exc:
        return _failure(started, f"timeout: {_describe(exc) or 'no answer in time'}")
    except ssl.SSLError as exc:
        return _failure(started, f"connection failed: {_describe(exc)}")
    except ConnectionError as exc:
        return _failure(started, f"connection failed: {_describe(exc)}")
    except (http.client.HTTPException, OSError, ValueError) as exc:
        return _failure(started, f"{type(exc).__name__}: {_describe(exc)}")
    finally:
        if own_client:
            active.close()


def _request_bytes(dest: Destination, body: bytes, headers: dict[str, str]) -> bytes:
    """The whole request in one buffer (one write: headers and body in the same segment on loopback)."""
    parts = urlsplit(dest.url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = f"[{dest.host}]" if ":" in dest.host else dest.host
    if dest.port != _DEFAULT_PORTS[dest.scheme]:
        host = f"{host}:{dest.port}"
    if any("\r" in part or "\n" in part for part in (target, *headers, *headers.values())):
        raise ValueError("a header or the path contains a line break")
    lines = [f"POST {target} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _exchange(client: PinnedClient, dest: Destination, request: bytes, deadline: _Deadline,
              started: float) -> SendOutcome:
    sock, reused = client.take(dest, deadline)
    try:
        try:
            answer = _round_trip(sock, request, deadline)
        except (ConnectionResetError, BrokenPipeError):
            if not reused:
                raise
            # A kept-alive connection the server closed just before the request: nothing was answered on it.
            sock.close()
            sock = client.connect(dest, deadline)
            answer = _round_trip(sock, request, deadline)
    except BaseException:
        sock.close()
        raise
    whole = answer.complete and len(answer.body) <= MAX_RESPONSE_BYTES
    keep = whole and answer.keep_alive
    response = answer.response()
    if keep:
        client.give_back(dest, sock)  # read to its end: the connection can carry the next request
    else:
        sock.close()  # the rest of an oversized answer is never read
    return _outcome(response.status_code, response.headers, response.content[:MAX_RESPONSE_BYTES], started)


def _round_trip(sock: socket.socket, request: bytes, deadline: _Deadline) -> Answer:
    """Send ``request`` and read the answer (its body up to just past :data:`MAX_RESPONSE_BYTES`), each read
    bounded by what is left of the deadline: a per-read timeout alone would let a server trickle its answer
    for ever. Parsed by httptools (``http.client``'s header parsing cost more CPU than the rest of a send)."""
    sock.settimeout(deadline.left())
    sock.sendall(request)
    answer = Answer()
    while not answer.complete and len(answer.body) <= MAX_RESPONSE_BYTES:
        sock.settimeout(deadline.left())
        data = sock.recv(_READ_SIZE)
        if not data:
            if answer.received == 0:
                raise http.client.RemoteDisconnected("Remote end closed connection without response")
            if not answer.end_of_connection():
                raise InvalidAnswer("the connection closed before the whole answer")
            break
        answer.feed(data)
    return answer


def _outcome(status: int, headers: Any, received: bytes, started: float) -> SendOutcome:
    latency_ms = _elapsed_ms(started)
    excerpt = _excerpt(received)
    if 200 <= status < 300:
        return SendOutcome(ok=True, status_code=status, latency_ms=latency_ms, error=None, retry_after_s=None,
                           gone=False, response_excerpt=excerpt)
    if 300 <= status < 400:
        where = (headers.get("location") or "")[:EXCERPT_CHARS]
        error = f"HTTP {status}: redirects are not followed" + (f" (Location: {where})" if where else "")
    else:
        error = f"HTTP {status}" + (f": {excerpt}" if excerpt else "")
    retry_after = None
    if status in (429, 503):
        retry_after = parse_retry_after(headers.get("retry-after"))
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
