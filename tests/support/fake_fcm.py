"""A local stand-in for Google's FCM HTTP v1 and its OAuth token endpoint, for tests.

- ``POST /token``: the OAuth2 JWT-bearer grant google-auth performs with a
  service account; the assertion's signature (the key of the file written by
  :meth:`FakeFcm.write_credentials`), audience and scope are checked and an
  access token is issued.
- ``POST /v1/projects/{project}/messages:send``: the bearer token must be
  one this server issued; the body is validated against the ``fcm.v1``
  discovery document (:mod:`tests.support.fcm_discovery`) and refused with
  400 ``INVALID_ARGUMENT`` as Google would; then what was scripted for the
  token answers (``UNREGISTERED``, 429 with ``Retry-After``, 503), otherwise
  the message is accepted and recorded.

Listens on 127.0.0.1 on an ephemeral port, in a thread.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import jwt as google_jwt

from tests.support.fcm_discovery import validate_send_request

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"


@dataclass(frozen=True)
class Answer:
    """A scripted refusal of one send."""

    http_status: int
    status: str
    error_code: str | None
    message: str
    retry_after: str | None = None

    def body(self) -> dict[str, Any]:
        details = [{"@type": FCM_ERROR, "errorCode": self.error_code}] if self.error_code else []
        return {"error": {"code": self.http_status, "message": self.message, "status": self.status,
                          "details": details}}


UNREGISTERED = Answer(404, "NOT_FOUND", "UNREGISTERED", "Requested entity was not found.")


def throttled(retry_after: int | str | None = None) -> Answer:
    """429 ``QUOTA_EXCEEDED`` (with a ``Retry-After`` when given)."""
    return Answer(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", "Quota exceeded for quota metric 'Send requests'.",
                  None if retry_after is None else str(retry_after))


def unavailable(retry_after: int | str | None = None) -> Answer:
    """503 ``UNAVAILABLE``."""
    return Answer(503, "UNAVAILABLE", "UNAVAILABLE", "The service is currently unavailable.",
                  None if retry_after is None else str(retry_after))


class FakeFcm:
    """The fake server; use as a context manager (it stops and joins its thread on exit)."""

    def __init__(self, project_id: str = "smartsvc-test") -> None:
        self.project_id = project_id
        self.messages: list[dict[str, Any]] = []  # accepted ``message`` objects, in order
        self.bearers: list[str] = []  # the bearer token of every send request
        self.token_requests: list[dict[str, Any]] = []  # the verified claims of every token request
        self.refusals: list[tuple[str | None, dict[str, Any]]] = []  # (token, error body) of refused sends
        self._issued: set[str] = set()
        self._dead: set[str] = set()
        self._script: dict[str, deque[Answer]] = defaultdict(deque)
        self._lock = threading.Lock()
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()).decode()
        self._public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-fcm", daemon=True)

    @property
    def url(self) -> str:
        """The base URL (what ``SMARTSVC_FCM_URL`` is set to)."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    def __enter__(self) -> "FakeFcm":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def write_credentials(self, path: Path, *, project_id: str | None = None) -> Path:
        """Write a service-account JSON file whose ``token_uri`` is this server; returns ``path``."""
        path.write_text(json.dumps({
            "type": "service_account", "project_id": project_id or self.project_id, "private_key_id": "fake-key-1",
            "private_key": self._private_pem, "client_email": "pusher@smartsvc-test.iam.gserviceaccount.com",
            "client_id": "1", "token_uri": self.token_uri,
        }))
        return path

    def unregister(self, token: str) -> None:
        """From now on sends to ``token`` get 404 ``UNREGISTERED``."""
        with self._lock:
            self._dead.add(token)

    def script(self, token: str, *answers: Answer) -> None:
        """The next sends to ``token`` get these answers, in order; then it is accepted again."""
        with self._lock:
            self._script[token].extend(answers)

    def revoke_tokens(self) -> None:
        """Forget every access token issued so far (sends with them get 401)."""
        with self._lock:
            self._issued.clear()

    def sent_to(self, token: str) -> list[dict[str, Any]]:
        """Accepted messages to ``token``."""
        with self._lock:
            return [m for m in self.messages if m.get("token") == token]

    # ---------------------------------------------------------------- request handling (server threads)

    def _token(self, form: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        if form.get("grant_type") != [JWT_BEARER] or len(form.get("assertion", [])) != 1:
            return 400, {"error": "unsupported_grant_type"}
        try:
            # google-auth addresses the assertion to Google's token endpoint whatever the file's token_uri.
            claims = google_jwt.decode(form["assertion"][0], certs=self._public_pem,
                                       audience=[self.token_uri, GOOGLE_TOKEN_AUDIENCE])
        except ValueError as exc:
            return 400, {"error": "invalid_grant", "error_description": str(exc)}
        if FCM_SCOPE not in str(claims.get("scope", "")).split():
            return 400, {"error": "invalid_scope", "error_description": f"scope {claims.get('scope')!r}"}
        with self._lock:
            self.token_requests.append(claims)
            access_token = f"ya29.fake-{len(self.token_requests)}"
            self._issued.add(access_token)
        return 200, {"access_token": access_token, "expires_in": 3600, "token_type": "Bearer"}

    def _send(self, project: str, authorization: str, raw: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        bearer = authorization[len("Bearer "):] if authorization.startswith("Bearer ") else ""
        with self._lock:
            self.bearers.append(bearer)
            known = bearer in self._issued
        if not known:
            return 401, _google(401, "UNAUTHENTICATED", "Request had invalid authentication credentials."), {}
        if project != self.project_id:
            return 403, _google(403, "PERMISSION_DENIED", f"Permission denied on project {project}."), {}
        try:
            body = json.loads(raw)
        except ValueError:
            return 400, _google(400, "INVALID_ARGUMENT", "Invalid JSON payload received."), {}
        violations = validate_send_request(body)
        if violations:
            error = _google(400, "INVALID_ARGUMENT", violations[0].description)
            error["error"]["details"] = [{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [
                {"field": v.field, "description": v.description} for v in violations]}]
            self.refusals.append((None, error))
            return 400, error, {}
        message = body["message"]
        token = message.get("token")
        with self._lock:
            answer = self._script[token].popleft() if self._script.get(token) else \
                UNREGISTERED if token in self._dead else None
            if answer is None:
                self.messages.append(message)
                return 200, {"name": f"projects/{project}/messages/0:{len(self.messages)}"}, {}
            self.refusals.append((token, answer.body()))
        return answer.http_status, answer.body(), {"Retry-After": answer.retry_after} if answer.retry_after else {}


def _google(code: int, status: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}}


def _handler_for(fake: FakeFcm) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the provider's pooled connection is reused
        # Headers and body go out in separate writes: without TCP_NODELAY each answer waits ~40 ms for
        # the client's delayed ACK (Nagle), which made these servers the slowest part of the tests.
        disable_nagle_algorithm = True

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            path = self.path.split("?", 1)[0]
            prefix, suffix = "/v1/projects/", "/messages:send"
            if path == "/token":
                status, body = fake._token(parse_qs(raw.decode()))
                self._reply(status, body, {})
            elif path.startswith(prefix) and path.endswith(suffix):
                self._reply(*fake._send(path[len(prefix):-len(suffix)], self.headers.get("Authorization", ""), raw))
            else:
                self._reply(404, _google(404, "NOT_FOUND", f"{path} not found"), {})

        def _reply(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet test output
            pass

    return Handler
