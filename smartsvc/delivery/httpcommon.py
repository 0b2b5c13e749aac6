"""Pieces the HTTP push providers (and the webhook sender) share: TLS trust, P-256 signing keys,
``Retry-After``, latency, kept-alive ``http.client`` connections, sending one by one while answers are fast."""

from __future__ import annotations

import http.client
import json
import select
import socket
import ssl
import threading
import time
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

# Longest wait we accept from a push service's Retry-After (a bogus year-long value must not park a push).
MAX_RETRY_AFTER_S = 24 * 3600.0
MAX_IDLE_CONNECTIONS = 32
# While a destination answers faster than this, a batch sends one request after the other from its own thread:
# sending threads would wait on almost nothing, and handing the GIL between them costs more CPU than they save
# (webhooks to a loopback receiver: 146 µs of CPU a send one by one, 260 µs with 8 threads; BENCHMARKS.md, 7).
FAST_ANSWER_S = 0.002

T = TypeVar("T")


def send_while_fast(items: Sequence[T], send: Callable[[T], Any], fast_s: float = FAST_ANSWER_S) -> list[T] | None:
    """Call ``send`` on ``items`` in order, from this thread, until a call takes longer than ``fast_s``.

    None when every call was fast (all sent); otherwise the items after the slow one, not sent (for the
    caller's sending threads)."""
    for n, item in enumerate(items):
        started = time.monotonic()
        send(item)
        if time.monotonic() - started > fast_s:
            return list(items[n + 1:])
    return None


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """The system's trust store, or only ``ca_file`` when given (a private or local push service)."""
    if ca_file is not None:
        return ssl.create_default_context(cafile=str(ca_file))
    return ssl.create_default_context()


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date); None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return min(max((when - now).total_seconds(), 0.0), MAX_RETRY_AFTER_S)


def elapsed_ms(started: float) -> int:
    """Milliseconds since ``started`` (a :func:`time.perf_counter` reading)."""
    return int(round((time.perf_counter() - started) * 1000))


def load_signing_key(pem: bytes, where: str = "key") -> ec.EllipticCurvePrivateKey:
    """The P-256 private key of a PEM (an APNs ``.p8`` file is one); ValueError naming ``where`` otherwise."""
    try:
        key = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"{where} is not a P-256 (ES256) private key")
    return key


class PlainResponse:
    """An answer read in full from ``http.client``, with the attributes of an httpx response the providers read."""

    __slots__ = ("status_code", "reason_phrase", "headers", "content")

    def __init__(self, status_code: int, reason_phrase: str, headers: Any, content: bytes) -> None:
        self.status_code, self.reason_phrase, self.headers, self.content = status_code, reason_phrase, headers, content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class KeptAliveConnections:
    """Kept-alive HTTP/1.1 connections to one origin for small POSTs; each is used by one thread at a time.

    The request goes out in one write (``http.client`` makes two: headers, then body, which on
    loopback costs a second round through the receiver's TCP stack) and the answer is read with
    ``http.client.HTTPResponse``. This costs about a quarter of httpx's CPU per request
    (BENCHMARKS.md §6). No redirects are followed.
    """

    def __init__(self, url: str, timeout_s: float, context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.https, self.host = parts.scheme == "https", parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self._host_header = parts.netloc.rsplit("@", 1)[-1]
        self.timeout_s = timeout_s
        self._context = context
        self._idle: list[socket.socket] = []
        self._lock = threading.Lock()

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.https:
                if self._context is None:
                    self._context = ssl.create_default_context()
                sock = self._context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        return sock

    def _take(self) -> tuple[socket.socket, bool]:
        """A connection, and whether it is a reused one."""
        with self._lock:
            while self._idle:
                sock = self._idle.pop()
                if not idle_connection_dropped(sock):
                    return sock, True
                sock.close()
        return self._connect(), False

    def _request(self, path: str, body: bytes, headers: dict[str, str]) -> bytes:
        parts = [path, *headers, *headers.values()]
        if any("\r" in part or "\n" in part for part in parts):
            raise ValueError("a header or the path contains a line break")
        lines = [f"POST {path} HTTP/1.1", f"Host: {self._host_header}", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    def _exchange(self, sock: socket.socket, request: bytes) -> http.client.HTTPResponse:
        sock.sendall(request)
        response = http.client.HTTPResponse(sock, method="POST")
        response.begin()
        return response

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> PlainResponse:
        """POST ``body`` and read the whole answer; OSError or ``HTTPException`` when the network fails.

        A reused connection the server closed just before the request (its idle timeout racing
        ours) gets the request once more on a new connection: nothing was answered on it.
        """
        request = self._request(path, body, headers)
        sock, reused = self._take()
        try:
            try:
                response = self._exchange(sock, request)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                if not reused:
                    raise
                sock.close()
                sock = self._connect()
                response = self._exchange(sock, request)
            content = response.read()
        except BaseException:
            sock.close()
            raise
        keep = not response.will_close
        if keep:
            with self._lock:
                keep = len(self._idle) < MAX_IDLE_CONNECTIONS
                if keep:
                    self._idle.append(sock)
        if not keep:
            sock.close()
        return PlainResponse(response.status, response.reason, response.headers, content)

    def close(self) -> None:
        """Close the idle connections."""
        with self._lock:
            idle, self._idle = self._idle, []
        for sock in idle:
            sock.close()


def idle_connection_dropped(sock: socket.socket) -> bool:
    """True when an idle connection was closed by the server (readable while idle: EOF or junk)."""
    try:
        poller = select.poll()  # not select.select: a worker may hold more than 1024 descriptors
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True
