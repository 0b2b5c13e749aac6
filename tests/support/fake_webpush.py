"""A local Web Push service for the tests: HTTPS, VAPID checked, ``aes128gcm`` bodies decrypted.

``subscribe()`` makes a subscription the way a browser does (a P-256 key
pair and an auth secret; the private half stays here), so the fake can
decrypt what the provider sent with ``http_ece`` and record the plaintext.
It checks the VAPID JWT (signature by the key in ``k``, ``aud`` = its own
origin, ``exp`` within 24 h, ``sub`` a mailto:/https: contact) and the
``TTL``/``Urgency``/``Topic`` headers, and answers per subscription as
scripted (410, 429 with Retry-After, ...).
"""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import http_ece
import jwt
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

MAX_BODY_BYTES = 4096
URGENCIES = {"very-low", "low", "normal", "high"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class WebPushDelivery:
    """One push the fake accepted: where, the headers and the decrypted payload."""

    endpoint: str
    headers: dict[str, str]
    plaintext: bytes
    encrypted_size: int
    claims: dict[str, Any]

    def json(self) -> Any:
        return json.loads(self.plaintext)


@dataclass
class _Subscriber:
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes
    script: tuple[int, str | None, int | None] | None = None  # status, Retry-After, times (None: always)


@dataclass
class FakeWebPush:
    """Start with ``with FakeWebPush(ca, vapid_public_key) as service:``."""

    ca: trustme.CA
    vapid_public_key: ec.EllipticCurvePublicKey
    received: list[WebPushDelivery] = field(default_factory=list)
    answers: list[tuple[str, int, str]] = field(default_factory=list)  # (path, status, why) of every request

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: dict[str, _Subscriber] = {}
        self.port = 0

    def __enter__(self) -> "FakeWebPush":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(min(length, 1 << 20))
                status, why, extra = fake._answer(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                data = json.dumps({"error": why}).encode() if why else b""
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: Any) -> None:
                pass

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def origin(self) -> str:
        return f"https://localhost:{self.port}"

    # -- subscriptions and scripts

    def subscribe(self) -> dict[str, Any]:
        """A new subscription as a browser's ``PushSubscription.toJSON()`` gives it."""
        private_key = ec.generate_private_key(ec.SECP256R1())
        auth = os.urandom(16)
        path = f"/push/{uuid.uuid4().hex}"
        with self._lock:
            self._subscribers[path] = _Subscriber(private_key, auth)
        public = private_key.public_key().public_bytes(serialization.Encoding.X962,
                                                       serialization.PublicFormat.UncompressedPoint)
        return {"endpoint": self.origin + path, "keys": {"p256dh": b64url(public), "auth": b64url(auth)}}

    def script(self, subscription: dict[str, Any], status: int, *, retry_after: str | None = None,
               times: int | None = None) -> None:
        """Answer pushes to ``subscription`` with ``status`` (``times`` times, or always)."""
        with self._lock:
            self._subscribers[self._path(subscription["endpoint"])].script = (status, retry_after, times)

    def _path(self, endpoint: str) -> str:
        return endpoint.removeprefix(self.origin)

    def for_subscription(self, subscription: dict[str, Any]) -> list[WebPushDelivery]:
        """The pushes accepted for ``subscription``."""
        return [d for d in self.received if d.endpoint == subscription["endpoint"]]

    # -- serving

    def _answer(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str, dict[str, str]]:
        status, why, extra = self._check(path, headers, body)
        with self._lock:
            self.answers.append((path, status, why))
        return status, why, extra

    def _check(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str, dict[str, str]]:
        with self._lock:
            subscriber = self._subscribers.get(path)
        if subscriber is None:
            return 404, "no such subscription", {}
        claims, problem = self._check_vapid(headers.get("authorization", ""))
        if problem:
            return 401, problem, {}
        if not re.fullmatch(r"\d+", headers.get("ttl", "")):
            return 400, "TTL header missing or not a number", {}
        if "urgency" in headers and headers["urgency"] not in URGENCIES:
            return 400, "bad Urgency", {}
        if "topic" in headers and not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", headers["topic"]):
            return 400, "Topic must be at most 32 base64url characters", {}
        if headers.get("content-encoding") != "aes128gcm":
            return 415, "Content-Encoding must be aes128gcm", {}
        if len(body) > MAX_BODY_BYTES:
            return 413, "payload too large", {}
        try:
            plaintext = http_ece.decrypt(body, private_key=subscriber.private_key, auth_secret=subscriber.auth,
                                         version="aes128gcm")
        except Exception as exc:  # http_ece raises its own and cryptography's errors
            return 400, f"cannot decrypt: {exc}", {}
        scripted = self._scripted(path)
        if scripted is not None:
            status, retry_after = scripted
            return status, f"scripted {status}", ({"retry-after": retry_after} if retry_after else {})
        with self._lock:
            self.received.append(WebPushDelivery(self.origin + path, headers, plaintext, len(body), claims))
        return 201, "", {"location": f"{self.origin}/message/{uuid.uuid4().hex}"}

    def _scripted(self, path: str) -> tuple[int, str | None] | None:
        with self._lock:
            subscriber = self._subscribers[path]
            if subscriber.script is None:
                return None
            status, retry_after, times = subscriber.script
            if times is not None:
                subscriber.script = (status, retry_after, times - 1) if times > 1 else None
            return status, retry_after

    def _check_vapid(self, authorization: str) -> tuple[dict[str, Any], str]:
        scheme, _, params = authorization.partition(" ")
        if scheme.lower() != "vapid":
            return {}, "Authorization must use the vapid scheme (RFC 8292)"
        parts = dict(part.strip().split("=", 1) for part in params.split(",") if "=" in part)
        try:
            key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(parts["k"]))
        except (KeyError, ValueError):
            return {}, "vapid k is not a P-256 public key"
        if key.public_numbers() != self.vapid_public_key.public_numbers():
            return {}, "vapid k is not the application server's key"
        try:
            claims = jwt.decode(parts.get("t", ""), key, algorithms=["ES256"], audience=self.origin,
                                options={"require": ["aud", "exp", "sub"]})
        except jwt.PyJWTError as exc:
            return {}, f"vapid t rejected: {exc}"
        if claims["exp"] > time.time() + 24 * 3600:
            return {}, "vapid exp more than 24 hours ahead"
        if not str(claims["sub"]).startswith(("mailto:", "https:")):
            return {}, "vapid sub must be a mailto: or https: URI"
        return claims, ""
