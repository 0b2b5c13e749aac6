"""Closing a container closes the push providers' connections it used; a closed provider reopens on use.

Without this, kept-alive push connections (FCM over its own kept-alive sockets, APNs
and Web Push over httpx) outlive the app that used them and are reported as
unclosed sockets when the process exits.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from smartsvc.bootstrap import build_container
from smartsvc.config import Settings
from smartsvc.delivery import provider_for
from smartsvc.delivery.apns import ApnsProvider
from smartsvc.delivery.cache import ProviderCache
from smartsvc.delivery.fcm import FcmProvider
from smartsvc.delivery.webpush import WebPushProvider


class Answers200(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server_url() -> Iterator[str]:
    """A local HTTP server that keeps connections alive and answers every POST with 200."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Answers200)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _p256_pem(path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


@pytest.fixture
def push_settings(tmp_path: Path, server_url: str) -> Settings:
    """Settings configuring all three push providers (FCM at the local server)."""
    return Settings(
        var_dir=tmp_path / "var", database_url=f"sqlite:///{tmp_path / 'var' / 'smartsvc.db'}",
        secret_key="test-secret-key-0123456789abcdef0123456789", push_provider="auto",
        fcm_url=server_url, fcm_credentials=tmp_path / "fcm-sa.json", fcm_project_id="demo",
        apns_url="https://127.0.0.1:9", apns_key_file=_p256_pem(tmp_path / "apns.p8"), apns_key_id="KEY1234567",
        apns_team_id="TEAM123456", apns_topic="com.example.app",
        vapid_private_key=_p256_pem(tmp_path / "vapid.pem"), vapid_subject="mailto:ops@example.com")


def _providers(settings: Settings) -> tuple[FcmProvider, ApnsProvider, WebPushProvider]:
    fcm, apns, webpush = (provider_for(SimpleNamespace(platform=p), settings) for p in ("fcm", "apns", "webpush"))
    assert isinstance(fcm, FcmProvider) and isinstance(apns, ApnsProvider) and isinstance(webpush, WebPushProvider)
    return fcm, apns, webpush


def test_closing_a_container_closes_its_providers_connections(push_settings):
    container = build_container(push_settings)
    fcm, apns, webpush = _providers(push_settings)
    answer = fcm._connections.post("/v1/projects/demo/messages:send", b"{}", {})  # leaves one kept-alive socket
    assert answer.status_code == 200
    [kept_alive] = fcm._connections._idle
    clients = [fcm._http(), apns._http(), webpush._http()]  # what a send opens (OAuth, HTTP/2, Web Push)
    assert not any(client.is_closed for client in clients)

    container.close()

    assert kept_alive.fileno() == -1  # the socket is closed, not just forgotten
    assert all(client.is_closed for client in clients)
    container.close()  # idempotent


def test_a_closed_provider_opens_new_connections_when_used_again(push_settings):
    container = build_container(push_settings)
    fcm, apns, webpush = _providers(push_settings)
    before = [fcm._http(), apns._http(), webpush._http()]
    container.close()

    assert _providers(push_settings) == (fcm, apns, webpush)  # still the shared ones (tokens kept)
    after = [fcm._http(), apns._http(), webpush._http()]
    assert all(old is not new and not new.is_closed for old, new in zip(before, after))
    assert fcm._connections.post("/v1/projects/demo/messages:send", b"{}", {}).status_code == 200
    container.close()
    assert all(client.is_closed for client in after)


def test_closing_leaves_the_providers_of_other_settings_open(push_settings, tmp_path):
    other = push_settings.replace(fcm_project_id="other", apns_topic="com.example.other",
                                  vapid_subject="mailto:other@example.com")
    mine, theirs = _providers(push_settings), _providers(other)
    clients = [provider._http() for provider in mine + theirs]
    build_container(push_settings).close()
    assert [client.is_closed for client in clients] == [True] * 3 + [False] * 3
    build_container(other).close()
    assert all(client.is_closed for client in clients)


class Counted:
    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_the_cache_closes_only_this_process_providers(monkeypatch):
    cache: ProviderCache[Counted] = ProviderCache(limit=2)
    monkeypatch.setattr("smartsvc.delivery.cache.os.getpid", lambda: 1)
    parent = cache.get("a", Counted)
    monkeypatch.setattr("smartsvc.delivery.cache.os.getpid", lambda: 2)  # as in a forked child
    child = cache.get("a", Counted)
    assert child is not parent  # a child never uses its parent's sockets
    cache.close_all()
    cache.close("a")
    assert (parent.closed, child.closed) == (0, 2)
    cache.get("b", Counted)  # the cache is full: the oldest (the parent's) is dropped, but not closed
    assert parent.closed == 0
    cache.get("c", Counted)  # the child's own oldest is dropped and closed
    assert child.closed == 3
