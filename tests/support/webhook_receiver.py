"""A local, scriptable webhook receiver for tests (HTTP, or HTTPS with a throwaway CA).

Usage::

    with WebhookReceiver() as receiver:                   # http://127.0.0.1:<ephemeral port>
        receiver.script(500, 500, 200)                    # then the default (200) forever
        ... send to receiver.url("/hooks/a") ...
        [first, *_] = receiver.wait_for(1)                # blocks until one request arrived
        first.headers["webhook-id"], first.body, first.received_at

    with WebhookReceiver(https=True) as receiver:         # certificate for partner.example, localhost, 127.0.0.1
        client = make_client(ssl_context=receiver.client_ssl_context())
        # receiver.url("/x", host="partner.example") + a resolver mapping partner.example -> 127.0.0.1

Replies, in :meth:`WebhookReceiver.script` order (an ``int`` is a bare status):

- ``Reply(503, retry_after="7")`` — a status with a ``Retry-After`` header;
- ``Reply.redirect("https://elsewhere.example/")`` — a 302 with ``Location``;
- ``Reply(200, delay_s=2.0)`` — answers late; ``Reply.hang()`` never answers (a dead endpoint);
  the connection is released when the receiver closes;
- ``Reply(200, body=b"x" * 10**6)`` — a large answer.

Every request is recorded when it arrives (before any delay) as a
:class:`ReceivedRequest` (method, path, lower-cased headers, body, UTC time,
TLS server name); ``receiver.requests`` is a snapshot. Nothing leaves
127.0.0.1, and the receiver is stopped even when a test fails.
"""

from __future__ import annotations

import socket
import ssl
import tempfile
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CERT_NAMES = ("partner.example", "localhost", "127.0.0.1")
MAX_REQUEST_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Reply:
    """One scripted answer: status, extra headers, body, and how long to wait before answering."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    retry_after: str | None = None

    @classmethod
    def redirect(cls, location: str, status: int = 302) -> "Reply":
        """A redirect to ``location`` (which a webhook sender must not follow)."""
        return cls(status, headers={"Location": location})

    @classmethod
    def hang(cls) -> "Reply":
        """Never answer: the request is read, then the connection stays silent until the receiver closes."""
        return cls(200, delay_s=float("inf"))


@dataclass(frozen=True)
class ReceivedRequest:
    """A request as the receiver saw it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-cased names; a repeated header keeps its last value
    body: bytes
    received_at: datetime
    tls_server_name: str | None  # the SNI the client sent (HTTPS only)


class WebhookReceiver:
    """A threaded HTTP(S) server on 127.0.0.1 (ephemeral port) that records requests and answers from a script."""

    def __init__(self, *, https: bool = False, default: Reply | int = 200) -> None:
        self.https = https
        self._default = _as_reply(default)
        self._script: deque[Reply] = deque()
        self._requests: list[ReceivedRequest] = []
        self._lock = threading.Condition()
        self._closing = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._ca: Any = None

    # ----------------------------------------------------------------- lifecycle
    def __enter__(self) -> "WebhookReceiver":
        server = _Server(("127.0.0.1", 0), _Handler)
        server.receiver = self  # type: ignore[attr-defined]
        if self.https:
            server.socket = self._server_ssl_context().wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="webhook-receiver", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving and release hanging requests."""
        self._closing.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # ----------------------------------------------------------------- addresses
    @property
    def port(self) -> int:
        """The ephemeral port the receiver listens on."""
        assert self._server is not None, "use the receiver as a context manager"
        return int(self._server.server_address[1])

    def url(self, path: str = "/hook", *, host: str = "127.0.0.1") -> str:
        """The URL of ``path`` on this receiver; ``host`` as written in the URL (resolve it to 127.0.0.1)."""
        return f"{'https' if self.https else 'http'}://{host}:{self.port}{path}"

    def client_ssl_context(self) -> ssl.SSLContext:
        """An SSL context that trusts this receiver's certificate (and verifies host names)."""
        assert self._ca is not None, "only an https receiver has a certificate"
        context = ssl.create_default_context()
        self._ca.configure_trust(context)
        return context

    # ----------------------------------------------------------------- script and record
    def script(self, *replies: Reply | int) -> None:
        """Answer the next requests with these replies, in order; then the default reply."""
        with self._lock:
            self._script.extend(_as_reply(r) for r in replies)

    def set_default(self, reply: Reply | int) -> None:
        """The reply once the script is used up (initially 200)."""
        with self._lock:
            self._default = _as_reply(reply)

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Every request received so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedRequest]:
        """Block until at least ``count`` requests arrived; AssertionError after ``timeout`` seconds."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._requests) >= count, timeout=timeout):
                raise AssertionError(f"expected {count} webhook requests, received {len(self._requests)}")
            return list(self._requests)

    def _record(self, request: ReceivedRequest) -> Reply:
        with self._lock:
            self._requests.append(request)
            self._lock.notify_all()
            return self._script.popleft() if self._script else self._default

    def _server_ssl_context(self) -> ssl.SSLContext:
        import trustme

        self._ca = trustme.CA()
        cert = self._ca.issue_cert(*CERT_NAMES)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(context)

        def remember_sni(sock: Any, server_name: str | None, _ctx: ssl.SSLContext) -> None:
            sock.webhook_sni = server_name  # read by the handler of this connection

        context.sni_callback = remember_sni
        self._tmp = tempfile.TemporaryDirectory(prefix="webhook-receiver-")
        self._ca.cert_pem.write_to_path(str(Path(self._tmp.name) / "ca.pem"))
        return context

    @property
    def ca_path(self) -> Path:
        """The CA certificate (PEM) of an https receiver, for clients configured by file."""
        assert self._tmp is not None, "only an https receiver has a certificate"
        return Path(self._tmp.name) / "ca.pem"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that rejects the certificate or hangs up is part of what tests do


def _as_reply(reply: Reply | int) -> Reply:
    return reply if isinstance(reply, Reply) else Reply(int(reply))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY each answer waits ~40 ms for
    # the client's delayed ACK (Nagle), which made these servers the slowest part of the tests.
    disable_nagle_algorithm = True
    server_version = "WebhookReceiver/1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests read the recorded requests, not a log

    def setup(self) -> None:
        # Headers and body go out as two writes; without this, delayed ACKs add ~40 ms to each answer.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()  # in this connection's thread, not the accepting one
        super().setup()

    def do_POST(self) -> None:
        self._answer()

    do_PUT = do_GET = do_DELETE = do_PATCH = do_POST

    def _answer(self) -> None:
        receiver: WebhookReceiver = self.server.receiver  # type: ignore[attr-defined]
        body = self._read_body()
        reply = receiver._record(ReceivedRequest(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            received_at=datetime.now(timezone.utc),
            tls_server_name=getattr(self.request, "webhook_sni", None),
        ))
        if reply.delay_s:
            wait = None if reply.delay_s == float("inf") else reply.delay_s
            if receiver._closing.wait(wait):
                self.close_connection = True
                return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.retry_after is not None:
            self.send_header("Retry-After", reply.retry_after)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        try:
            self.wfile.write(reply.body)
        except OSError:
            self.close_connection = True  # the client stopped reading (a capped read): fine

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
                if len(data) > MAX_REQUEST_BYTES:
                    raise ValueError("request body too large for the test receiver")
        length = min(int(self.headers.get("Content-Length") or 0), MAX_REQUEST_BYTES)
        return self.rfile.read(length)
