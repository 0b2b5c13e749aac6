"""Sending webhooks to a local receiver: pinned to the checked address, no redirects, bounded, never raising."""

from __future__ import annotations

import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from standardwebhooks import Webhook

from smartsvc.timeutil import utcnow
from smartsvc.webhooks.signing import new_secret, sign_headers
from smartsvc.webhooks.transport import make_client, parse_retry_after, send_webhook
from tests.support.servers import free_port
from tests.support.webhook_receiver import Reply, WebhookReceiver

PUBLIC_V4 = "93.184.215.14"
BODY = b'{"type":"webhook.test","timestamp":"2026-01-01T00:00:00Z","data":{}}'


def to_loopback(host: str, port: int) -> list[str]:
    """A resolver that sends every name to this machine (tests allow private addresses)."""
    return ["127.0.0.1"]


def send(url: str, *, headers: dict[str, str] | None = None, **kwargs) -> object:
    options = {"allow_private": True, "allow_http": True, "resolve": to_loopback, "timeout_s": 5.0, **kwargs}
    return send_webhook(url, BODY, headers or {}, **options)


@pytest.fixture
def receiver():
    with WebhookReceiver() as running:
        yield running


def test_a_pinned_send_connects_to_the_resolved_address_with_the_partners_host(receiver):
    outcome = send(receiver.url("/hooks/in", host="partner.example"), headers={"Host": "evil.example"})
    assert outcome.ok and outcome.status_code == 200 and outcome.error is None
    [request] = receiver.requests
    assert request.headers["host"] == f"partner.example:{receiver.port}"  # a caller cannot steer the Host
    assert (request.method, request.path, request.body) == ("POST", "/hooks/in", BODY)
    assert request.headers["content-type"] == "application/json"


def test_https_is_pinned_too_with_sni_and_the_certificate_checked_for_the_host_name():
    with WebhookReceiver(https=True) as receiver:
        client = make_client(ssl_context=receiver.client_ssl_context())
        try:
            good = send(receiver.url(host="partner.example"), allow_http=False, client=client)
            other = send(receiver.url(host="other.example"), allow_http=False, client=client)
        finally:
            client.close()
        assert good.ok
        [request] = receiver.requests
        assert request.tls_server_name == "partner.example"
        assert not other.ok and other.status_code is None
        assert "certificate" in other.error and "other.example" in other.error
        # Without the receiver's CA, its certificate is not trusted: nothing is sent.
        untrusted = send(receiver.url(host="partner.example"), allow_http=False)
        assert not untrusted.ok and "certificate verify failed" in untrusted.error
        assert len(receiver.requests) == 1


def test_dns_changing_to_a_private_address_after_registration_is_refused_at_send(receiver):
    answers = iter([[PUBLIC_V4], ["127.0.0.1"]])

    def rebinding(host: str, port: int) -> list[str]:
        return next(answers)

    from smartsvc.webhooks.ssrf import check_url

    url = receiver.url(host="partner.example")
    assert check_url(url, allow_private=False, allow_http=True, resolve=rebinding).addresses == (PUBLIC_V4,)
    outcome = send_webhook(url, BODY, {}, allow_private=False, allow_http=True, resolve=rebinding)
    assert not outcome.ok and outcome.unsafe and outcome.status_code is None
    assert "partner.example resolves to 127.0.0.1" in outcome.error and "loopback" in outcome.error
    assert receiver.requests == []


def test_the_send_resolves_once_and_uses_that_answer(receiver):
    calls = []

    def counting(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"]

    # "partner.example" does not exist: only the checked answer can bring the request here.
    assert send(receiver.url(host="partner.example"), resolve=counting).ok
    assert calls == ["partner.example"]


def test_a_client_resolves_a_host_name_at_every_send_and_checks_an_address_once(receiver, monkeypatch):
    """One batch's client: a host name is resolved again for each send, so DNS turning private mid-batch is
    refused at the next send; a URL with an IP address is checked once (no DNS answer can change it)."""
    from smartsvc.webhooks import transport

    answers: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        answers.append("127.0.0.1" if answers else PUBLIC_V4)
        return [answers[-1]]

    checks: list[str] = []
    real_check = transport.check_url

    def counting(url: str, **options):
        checks.append(url)
        return real_check(url, **options)

    monkeypatch.setattr(transport, "check_url", counting)
    client = make_client()
    try:
        named = receiver.url(host="partner.example")
        assert client.check(named, allow_private=False, allow_http=True, resolve=rebinding).addresses == (PUBLIC_V4,)
        refused = send_webhook(named, BODY, {}, allow_private=False, allow_http=True, resolve=rebinding,
                               client=client)
        assert refused.unsafe and "partner.example resolves to 127.0.0.1" in refused.error
        assert len(answers) == 2
        del checks[:]
        outcomes = [send(receiver.url(), client=client) for _ in range(3)]
        assert all(o.ok for o in outcomes) and checks == [receiver.url()]
        refusing = make_client()
        try:  # a refusal is not kept: the same URL with private addresses refused is checked at each send
            for _ in range(2):
                assert send(receiver.url(), allow_private=False, client=refusing).unsafe
        finally:
            refusing.close()
        assert checks == [receiver.url()] * 3
    finally:
        client.close()
    assert len(receiver.requests) == 3


def test_a_pinned_client_refuses_hosts_no_send_has_checked(receiver):
    from smartsvc.webhooks.ssrf import Destination
    from smartsvc.webhooks.transport import _Deadline

    client = make_client()
    unchecked = Destination(url=receiver.url(), scheme="http", host="127.0.0.1", port=receiver.port, addresses=())
    try:
        with pytest.raises(ConnectionError, match="no checked address"):
            client.connect(unchecked, _Deadline(time.monotonic() + 5))
        with pytest.raises(TypeError, match="make_client"):
            send(receiver.url(), client=object())
    finally:
        client.close()
    assert receiver.requests == []


def test_a_client_is_reused_across_sends_over_one_kept_alive_connection(receiver, monkeypatch):
    connects = []
    real = socket.create_connection

    def counting(address, *args, **kwargs):
        connects.append(address)
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", counting)
    client = make_client()
    try:
        outcomes = [send(receiver.url(host="partner.example"), client=client) for _ in range(3)]
    finally:
        client.close()
    assert all(o.ok for o in outcomes) and len(receiver.requests) == 3
    assert connects == [("127.0.0.1", receiver.port)]  # the pinned address, once


def test_a_kept_alive_connection_the_server_closed_is_replaced_without_losing_the_send(receiver):
    client = make_client()
    try:
        assert send(receiver.url(), client=client).ok
        receiver.script(Reply(200, headers={"Connection": "close"}))
        assert send(receiver.url(), client=client).ok  # the server closes this one after answering
        assert send(receiver.url(), client=client).ok  # a new connection
    finally:
        client.close()
    assert len(receiver.requests) == 3


def test_redirects_are_failures_and_not_followed(receiver):
    receiver.script(Reply.redirect(receiver.url("/elsewhere")), Reply.redirect("/moved", status=307))
    first = send(receiver.url("/hook"))
    second = send(receiver.url("/hook"))
    assert (first.ok, first.status_code, second.status_code) == (False, 302, 307)
    assert "redirects are not followed" in first.error and "/elsewhere" in first.error
    assert [r.path for r in receiver.requests] == ["/hook", "/hook"]


def test_a_scripted_sequence_of_failures_then_success(receiver):
    receiver.script(Reply(500, body=b"<h1>boom: database down</h1>"), 502, 200)
    outcomes = [send(receiver.url()) for _ in range(3)]
    assert [(o.ok, o.status_code) for o in outcomes] == [(False, 500), (False, 502), (True, 200)]
    assert "HTTP 500" in outcomes[0].error and "boom: database down" in outcomes[0].error
    assert not any(o.gone or o.unsafe for o in outcomes)


def test_410_means_gone(receiver):
    receiver.script(410)
    outcome = send(receiver.url())
    assert (outcome.ok, outcome.status_code, outcome.gone) == (False, 410, True)


def test_retry_after_is_honoured_on_429_and_503_only(receiver):
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    receiver.script(Reply(429, retry_after="7"), Reply(503, retry_after=format_datetime(later, usegmt=True)),
                    Reply(500, retry_after="7"), Reply(429, retry_after="soon"))
    seconds, dated, other, garbage = (send(receiver.url()) for _ in range(4))
    assert seconds.retry_after_s == 7.0
    assert 3000 < dated.retry_after_s <= 3600
    assert other.retry_after_s is None and garbage.retry_after_s is None


def test_retry_after_parsing():
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after("120", now=now) == 120.0
    assert parse_retry_after(" 0 ", now=now) == 0.0
    assert parse_retry_after("Sun, 01 Mar 2026 12:02:30 GMT", now=now) == 150.0
    assert parse_retry_after("Sun, 01 Mar 2026 11:00:00 GMT", now=now) == 0.0  # in the past: now
    for bad in (None, "", "-5", "1.5", "tomorrow", "Sun, 99 Foo 2026"):
        assert parse_retry_after(bad, now=now) is None


def test_a_hanging_endpoint_times_out_without_raising(receiver):
    receiver.script(Reply.hang())
    outcome = send(receiver.url(), timeout_s=0.3)
    assert (outcome.ok, outcome.status_code) == (False, None)
    assert outcome.error.startswith("timeout")
    assert len(receiver.requests) == 1


def test_the_timeout_bounds_the_whole_exchange_not_each_read():
    """A server that trickles its answer byte by byte never lets one read wait long, yet the send stops."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Padding: " + b"a" * 60 + b"\r\n\r\n"
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(5)
            conn.recv(65536)
            for byte in answer:
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return  # the sender gave up: what the test expects
                time.sleep(0.1)

    server = threading.Thread(target=trickle, daemon=True)
    server.start()
    try:
        outcome = send(f"http://127.0.0.1:{port}/", timeout_s=0.5)
    finally:
        server.join(timeout=15)
        listener.close()
    assert not outcome.ok and outcome.error.startswith("timeout")


def test_refused_connections_and_unresolvable_hosts_are_failures_not_exceptions():
    refused = send(f"http://127.0.0.1:{free_port()}/")
    assert not refused.ok and refused.error.startswith("connection failed") and not refused.unsafe

    def nxdomain(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    unresolved = send("https://partner.example/", resolve=nxdomain)
    assert not unresolved.ok and "does not resolve" in unresolved.error
    assert not unresolved.unsafe  # DNS may come back: the caller may retry


def test_an_unsafe_url_at_send_time_is_reported_not_raised():
    outcome = send_webhook("https://10.0.0.5/hook", BODY, {}, allow_private=False, allow_http=False)
    assert (outcome.ok, outcome.unsafe, outcome.status_code) == (False, True, None)
    assert outcome.error == "url: 10.0.0.5 is a private address"


def test_a_huge_answer_is_read_only_up_to_the_cap(receiver):
    receiver.script(Reply(200, body=b"x" * 5_000_000))
    outcome = send(receiver.url())
    assert outcome.ok
    assert len(outcome.response_excerpt) <= 200


def test_proxy_settings_in_the_environment_are_ignored(receiver, monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{free_port()}")
    assert send(receiver.url(host="partner.example")).ok
    assert len(receiver.requests) == 1


def test_signed_requests_verify_at_the_partner_with_either_secret_during_rotation(receiver):
    old, new = new_secret(), new_secret()
    headers = sign_headers("msg_e2e", utcnow(), BODY, [new, old])
    assert send(receiver.url(host="partner.example"), headers=headers).ok
    [request] = receiver.requests
    for secret in (old, new):
        assert Webhook(secret).verify(request.body, request.headers)["type"] == "webhook.test"
