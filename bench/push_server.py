"""A lean loopback FCM HTTP v1 stand-in: the load target of benchmark 6 (push fan-out).

``python -m bench.push_server --port P --public-key FILE --project ID`` serves,
on 127.0.0.1 over HTTP/1.1 with keep-alive (one asyncio event loop, a
hand-written request parser, nothing else):

- ``POST /token`` — the OAuth2 JWT-bearer grant google-auth performs for a
  service account: the assertion's RS256 signature (against ``--public-key``,
  the key of the credentials file the benchmark wrote), audience and scope
  are checked; an access token is issued (``expires_in`` 3600).
- ``POST /v1/projects/{project}/messages:send`` — the bearer must be a token
  this server issued (else 401 ``UNAUTHENTICATED``), the project ``--project``
  (else 403); the body must be JSON with a ``message`` object whose
  ``token`` is a non-empty string, whose ``data`` (when present) maps
  strings to strings and whose ``notification`` (when present) is an object
  (else 400 ``INVALID_ARGUMENT``). Then 200 ``{"name":
  "projects/{project}/messages/0:<n>"}``, as FCM answers.
- ``GET /stats`` — messages accepted and refused so far, and token grants.

The test suite's :mod:`tests.support.fake_fcm` validates every message against
the whole discovery document and records it; this one checks the shape
minimally, so that it costs the load as little as possible (its own ceiling is
measured by the benchmark with wrk).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
SEND_PREFIX, SEND_SUFFIX = "/v1/projects/", "/messages:send"
MAX_HEAD = 16 * 1024
MAX_BODY = 64 * 1024

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 413: "Payload Too Large"}


def _google(code: int, status: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}}


class FcmState:
    """What the server knows: the project, the signing key's public half, issued tokens, counts."""

    def __init__(self, project: str, public_pem: bytes, token_uri: str) -> None:
        self.project = project
        self.public_pem = public_pem
        self.token_uri = token_uri
        self.issued: set[str] = set()
        self.accepted = 0
        self.refused = 0
        self.grants = 0

    def token(self, raw: bytes) -> tuple[int, dict[str, Any]]:
        """The JWT-bearer grant: a verified assertion gets an access token."""
        from google.auth import jwt as google_jwt

        form = parse_qs(raw.decode(errors="replace"))
        if form.get("grant_type") != [JWT_BEARER] or len(form.get("assertion", [])) != 1:
            return 400, {"error": "unsupported_grant_type"}
        try:
            claims = google_jwt.decode(form["assertion"][0], certs=self.public_pem,
                                       audience=[self.token_uri, GOOGLE_TOKEN_AUDIENCE])
        except ValueError as exc:
            return 400, {"error": "invalid_grant", "error_description": str(exc)}
        if FCM_SCOPE not in str(claims.get("scope", "")).split():
            return 400, {"error": "invalid_scope"}
        self.grants += 1
        access_token = "ya29.bench-" + secrets.token_urlsafe(24)
        self.issued.add(access_token)
        return 200, {"access_token": access_token, "expires_in": 3600, "token_type": "Bearer"}

    def send(self, project: str, authorization: str, raw: bytes) -> tuple[int, dict[str, Any]]:
        """One ``messages:send``: bearer, project and a minimal shape check, then FCM's answer."""
        if not authorization.startswith("Bearer ") or authorization[7:] not in self.issued:
            self.refused += 1
            return 401, _google(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        if project != self.project:
            self.refused += 1
            return 403, _google(403, "PERMISSION_DENIED", f"Permission denied on project {project}.")
        problem = _shape_problem(raw)
        if problem:
            self.refused += 1
            return 400, _google(400, "INVALID_ARGUMENT", problem)
        self.accepted += 1
        return 200, {"name": f"projects/{project}/messages/0:{self.accepted}"}


def _shape_problem(raw: bytes) -> str | None:
    try:
        body = json.loads(raw)
    except ValueError:
        return "Invalid JSON payload received."
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(message, dict):
        return "Invalid JSON payload received. Unknown name \"\": 'message' is required."
    token = message.get("token")
    if not isinstance(token, str) or not token:
        return "The registration token is not a valid FCM registration token"
    data = message.get("data", {})
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        return "Invalid value at 'message.data': values must be strings"
    if not isinstance(message.get("notification", {}), dict):
        return "Invalid value at 'message.notification'"
    return None


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; requests are answered in order (pipelining works)."""

    def __init__(self, state: FcmState) -> None:
        self.state = state
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD:
                    self._reply(400, _google(400, "INVALID_ARGUMENT", "header too large"), close=True)
                return
            lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
            try:
                method, target, _version = lines[0].split(" ", 2)
            except ValueError:
                self._reply(400, _google(400, "INVALID_ARGUMENT", "bad request line"), close=True)
                return
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            try:
                length = int(headers.get("content-length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY or "chunked" in headers.get("transfer-encoding", ""):
                self._reply(413, _google(413, "INVALID_ARGUMENT", "body length"), close=True)
                return
            if len(buffer) < end + 4 + length:
                return  # the rest of the body is still on its way
            body = bytes(buffer[end + 4:end + 4 + length])
            del buffer[:end + 4 + length]
            status, answer = self._route(method, target.split("?", 1)[0], headers, body)
            self._reply(status, answer, close=headers.get("connection", "").lower() == "close")
            if self.transport is None or self.transport.is_closing():
                return

    def _route(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        state = self.state
        if path.startswith(SEND_PREFIX) and path.endswith(SEND_SUFFIX):
            if method != "POST":
                return 405, _google(405, "INVALID_ARGUMENT", "POST only")
            return state.send(path[len(SEND_PREFIX):-len(SEND_SUFFIX)], headers.get("authorization", ""), body)
        if path == "/token" and method == "POST":
            return state.token(body)
        if path == "/stats" and method == "GET":
            return 200, {"accepted": state.accepted, "refused": state.refused, "grants": state.grants}
        return 404, _google(404, "NOT_FOUND", f"{path} not found")

    def _reply(self, status: int, answer: dict[str, Any], close: bool = False) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        data = json.dumps(answer).encode()
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                f"Content-Type: application/json; charset=UTF-8\r\nContent-Length: {len(data)}\r\n"
                + ("Connection: close\r\n" if close else "") + "\r\n").encode()
        self.transport.write(head + data)
        if close:
            self.transport.close()


async def serve(port: int, state: FcmState, ready: asyncio.Event | None = None) -> None:
    """Serve on 127.0.0.1:``port`` until cancelled."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(state), "127.0.0.1", port, backlog=1024)
    print(f"push_server listening on 127.0.0.1:{port}", flush=True)
    if ready is not None:
        ready.set()
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.push_server --port P --public-key FILE --project ID``."""
    parser = argparse.ArgumentParser(prog="python -m bench.push_server", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--public-key", type=Path, required=True, help="PEM public key that signs the assertions")
    parser.add_argument("--project", required=True, help="the Firebase project id messages must name")
    args = parser.parse_args(argv)
    token_uri = f"http://127.0.0.1:{args.port}/token"
    state = FcmState(args.project, args.public_key.read_bytes(), token_uri)
    try:
        asyncio.run(serve(args.port, state))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
