"""A local APNs for the tests: HTTP/2 over TLS (``h2`` on a socket thread), strict about what Apple checks.

It verifies the provider token (ES256 signature with the test's public key,
``kid``, ``iss``, age), requires the ``apns-*`` headers and a JSON body of at
most 4096 bytes, answers per device token as scripted (410 with a
timestamp, 400 BadDeviceToken, 429, ...) and records every accepted push.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import jwt
import trustme
from cryptography.hazmat.primitives.asymmetric import ec

MAX_BODY_BYTES = 4096
REQUIRED_HEADERS = ("apns-topic", "apns-push-type", "apns-priority", "apns-expiration")
PUSH_TYPES = {"alert", "background", "location", "voip", "complication", "fileprovider", "mdm", "liveactivity"}


@dataclass(frozen=True)
class ApnsPush:
    """One push the fake accepted."""

    token: str
    headers: dict[str, str]
    payload: dict[str, Any]
    size: int
    claims: dict[str, Any]


@dataclass
class _Script:
    status: int
    reason: str
    timestamp_ms: int | None = None
    retry_after: str | None = None
    times: int | None = None  # None: every time


@dataclass
class FakeApns:
    """Start with ``with FakeApns(...) as apns:``; ``apns.url`` is its base URL (trusted through ``ca``)."""

    ca: trustme.CA
    public_key: ec.EllipticCurvePublicKey
    key_id: str
    team_id: str
    topic: str
    pushes: list[ApnsPush] = field(default_factory=list)
    answers: list[tuple[str, int, str]] = field(default_factory=list)  # (token, status, reason) of every request
    tokens_seen: list[str] = field(default_factory=list)  # distinct provider tokens, first use order

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._scripts: dict[str, _Script] = {}
        self._expired: set[str] = set()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self.port = 0

    # -- lifecycle

    def __enter__(self) -> "FakeApns":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
        context.set_alpn_protocols(["h2"])
        self._context = context
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._spawn(self._accept_loop)
        return self

    def __exit__(self, *_exc: Any) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._listener.close()
        for sock in self._sockets:
            sock.close()

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    # -- scripting

    def script(self, token: str, status: int, reason: str, *, timestamp_ms: int | None = None,
               retry_after: str | None = None, times: int | None = None) -> None:
        """Answer pushes to ``token`` with ``status``/``reason`` (``times`` times, or always)."""
        with self._lock:
            self._scripts[token] = _Script(status, reason, timestamp_ms, retry_after, times)

    def expire_current_tokens(self) -> None:
        """Every provider token used so far is answered with 403 ExpiredProviderToken from now on."""
        with self._lock:
            self._expired.update(self.tokens_seen)

    # -- serving

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self._listener.accept()
            except (socket.timeout, OSError):
                continue
            self._sockets.append(raw)
            self._spawn(self._serve, raw)

    def _serve(self, raw: socket.socket) -> None:
        try:
            raw.settimeout(5)
            sock = self._context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()
            return
        self._sockets.append(sock)
        if sock.selected_alpn_protocol() != "h2":  # APNs speaks HTTP/2 only
            sock.close()
            return
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        sock.settimeout(0.2)
        streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        try:
            sock.sendall(conn.data_to_send())
            while not self._stop.is_set():
                try:
                    data = sock.recv(65535)
                except socket.timeout:
                    continue
                if not data:
                    return
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        streams[event.stream_id] = ({k.lower(): v for k, v in event.headers}, bytearray())
                    elif isinstance(event, h2.events.DataReceived):
                        streams[event.stream_id][1].extend(event.data)
                        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        headers, body = streams.pop(event.stream_id)
                        self._respond(conn, event.stream_id, *self._answer(headers, bytes(body)))
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        sock.sendall(conn.data_to_send())
                        return
                sock.sendall(conn.data_to_send())
        except (OSError, ssl.SSLError):
            return
        finally:
            sock.close()

    @staticmethod
    def _respond(conn: Any, stream_id: int, status: int, headers: dict[str, str], body: dict | None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        response = [(":status", str(status)), *headers.items()]
        if data:
            response += [("content-type", "application/json"), ("content-length", str(len(data)))]
        conn.send_headers(stream_id, response, end_stream=not data)
        if data:
            conn.send_data(stream_id, data, end_stream=True)

    def _answer(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], dict | None]:
        path = headers.get(":path", "")
        token = path.removeprefix("/3/device/") if path.startswith("/3/device/") else ""
        status, extra, answer = self._check(headers, body, token)
        with self._lock:
            self.answers.append((token, status, (answer or {}).get("reason", "")))
        return status, extra, answer

    def _check(self, headers: dict[str, str], body: bytes, token: str) -> tuple[int, dict[str, str], dict | None]:
        apns_id = {"apns-id": str(uuid.uuid4()).upper()}
        if headers.get(":method") != "POST":
            return 405, apns_id, {"reason": "MethodNotAllowed"}
        if not token:
            return 404, apns_id, {"reason": "BadPath"}
        claims, problem = self._check_token(headers.get("authorization", ""))
        if problem:
            return 403, apns_id, {"reason": problem}
        for name in REQUIRED_HEADERS:
            if not headers.get(name):
                return 400, apns_id, {"reason": "MissingTopic" if name == "apns-topic" else f"Missing:{name}"}
        if headers["apns-topic"] != self.topic:
            return 400, apns_id, {"reason": "TopicDisallowed"}
        if headers["apns-push-type"] not in PUSH_TYPES:
            return 400, apns_id, {"reason": "InvalidPushType"}
        if headers["apns-priority"] not in ("5", "10"):
            return 400, apns_id, {"reason": "BadPriority"}
        if not headers["apns-expiration"].isdigit():
            return 400, apns_id, {"reason": "BadExpirationDate"}
        if len(headers.get("apns-collapse-id", "").encode()) > 64:
            return 400, apns_id, {"reason": "BadCollapseId"}
        if not re.fullmatch(r"[0-9A-Za-z_.:-]{1,200}", token):
            return 400, apns_id, {"reason": "BadDeviceToken"}
        if len(body) > MAX_BODY_BYTES:
            return 413, apns_id, {"reason": "PayloadTooLarge"}
        if not body:
            return 400, apns_id, {"reason": "PayloadEmpty"}
        try:
            payload = json.loads(body)
        except ValueError:
            return 400, apns_id, {"reason": "BadPayload"}
        if not isinstance(payload, dict) or not isinstance(payload.get("aps"), dict):
            return 400, apns_id, {"reason": "BadPayload"}
        scripted = self._scripted(token)
        if scripted is not None:
            answer: dict[str, Any] = {"reason": scripted.reason}
            if scripted.timestamp_ms is not None:
                answer["timestamp"] = scripted.timestamp_ms
            extra = dict(apns_id, **({"retry-after": scripted.retry_after} if scripted.retry_after else {}))
            return scripted.status, extra, answer
        with self._lock:
            self.pushes.append(ApnsPush(token, {k: v for k, v in headers.items() if k.startswith("apns-")},
                                        payload, len(body), claims))
        return 200, apns_id, None

    def _scripted(self, token: str) -> _Script | None:
        with self._lock:
            scripted = self._scripts.get(token)
            if scripted is None:
                return None
            if scripted.times is not None:
                scripted.times -= 1
                if scripted.times <= 0:
                    del self._scripts[token]
            return scripted

    def _check_token(self, authorization: str) -> tuple[dict[str, Any], str | None]:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return {}, "MissingProviderToken"
        with self._lock:
            if token not in self.tokens_seen:
                self.tokens_seen.append(token)
            if token in self._expired:
                return {}, "ExpiredProviderToken"
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, self.public_key, algorithms=["ES256"], options={"require": ["iss", "iat"]})
        except jwt.PyJWTError:
            return {}, "InvalidProviderToken"
        if header.get("kid") != self.key_id or claims.get("iss") != self.team_id:
            return {}, "InvalidProviderToken"
        if claims["iat"] < time.time() - 3600:
            return {}, "ExpiredProviderToken"
        return claims, None
