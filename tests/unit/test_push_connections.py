"""The push providers' kept-alive connections against a local HTTP server (127.0.0.1, ephemeral port).

A connection the server closed while it sat idle (push services drop idle
connections) is replaced, not reported as a failed push; several threads
posting at once each get their own answer; many requests at once from one
thread are answered in order, each failing alone.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest
import trustme

from smartsvc.delivery.connections import InvalidAnswer, KeptAliveConnections


class Server:
    def __init__(self, close_after_answer: bool) -> None:
        self.close_after_answer = close_after_answer
        self.connections = 0
        self.bodies: list[bytes] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def setup(self) -> None:
                super().setup()
                owner.connections += 1

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                owner.bodies.append(body)
                answer = json.dumps({"echo": json.loads(body), "path": self.path,
                                     "auth": self.headers.get("Authorization")}).encode()
                self.send_response(200 if json.loads(body)["n"] % 2 == 0 else 429)
                self.send_header("Content-Length", str(len(answer)))
                self.send_header("Retry-After", "7")
                self.end_headers()
                self.wfile.write(answer)
                # Closes without saying so ("Connection: close"): as a server dropping an idle connection.
                self.close_connection = close_after_answer

            def log_message(self, *args) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}/base"


@pytest.fixture(params=[False, True], ids=["kept-alive", "server-drops-idle"])
def server(request) -> Iterator[Server]:
    server = Server(close_after_answer=request.param)
    server.thread.start()
    yield server
    server.http.shutdown()
    server.http.server_close()


def test_posts_reuse_a_connection_and_survive_one_the_server_dropped(server):
    pool = KeptAliveConnections(server.url, timeout_s=5)
    for n in range(4):
        answer = pool.post("/base/send", json.dumps({"n": n}).encode(), {"Authorization": "Bearer t"})
        assert answer.status_code == (200 if n % 2 == 0 else 429)
        assert answer.json() == {"echo": {"n": n}, "path": "/base/send", "auth": "Bearer t"}
        assert answer.headers.get("retry-after") == "7"
    # Kept alive: one connection for all; dropped after each answer: a fresh one each time, no error.
    assert server.connections == (4 if server.close_after_answer else 1)
    pool.close()


def test_threads_posting_at_once_each_get_their_own_answer(server):
    pool = KeptAliveConnections(server.url, timeout_s=5)
    with ThreadPoolExecutor(8) as executor:
        answers = list(executor.map(
            lambda n: pool.post("/base/send", json.dumps({"n": n}).encode(), {}).json()["echo"]["n"], range(64)))
    assert answers == list(range(64))
    pool.close()


def test_a_line_break_in_a_header_is_refused_before_anything_is_sent(server):
    pool = KeptAliveConnections(server.url, timeout_s=5)
    with pytest.raises(ValueError):
        pool.post("/base/send", b"{}", {"Authorization": "Bearer t\r\nX-Injected: 1"})
    assert server.bodies == []


# --------------------------------------------------------------------------- many at once from one thread


class Scripted:
    """A server whose every answer is what the request's JSON body asks for: wait ``delay`` seconds, then answer
    ``n`` with a length, in chunks, up to the end of the connection, garbage, or never. Counts the requests it
    holds at once."""

    def __init__(self, tls: bool) -> None:
        self.in_flight = self.most_in_flight = 0
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                ask = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with owner.lock:
                    owner.in_flight += 1
                    owner.most_in_flight = max(owner.most_in_flight, owner.in_flight)
                time.sleep(ask.get("delay", 0))
                with owner.lock:
                    owner.in_flight -= 1
                answer = json.dumps({"n": ask["n"]}).encode()
                how = ask.get("how", "length")
                if how == "never":
                    time.sleep(5)
                    self.close_connection = True
                    return
                if how == "garbage":
                    self.wfile.write(b"SMTP ready\r\n\r\n")
                    self.close_connection = True
                    return
                self.send_response(200)
                self.send_header("X-Seen", "a")
                self.send_header("X-Seen", "b")
                if how == "length":
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                elif how == "chunked":
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for part in (answer[:3], answer[3:]):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                    self.wfile.write(b"0\r\n\r\n")
                else:  # the body runs to the end of the connection
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(answer)
                    self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.context: ssl.SSLContext | None = None
        if tls:  # each write of the handler is a TLS record of its own: answers arrive in pieces
            authority = trustme.CA()
            served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            authority.issue_cert("127.0.0.1").configure_cert(served)
            self.http.socket = served.wrap_socket(self.http.socket, server_side=True)
            self.context = ssl.create_default_context()
            authority.configure_trust(self.context)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.http.server_address[1]}"

    def pool(self, timeout_s: float) -> KeptAliveConnections:
        return KeptAliveConnections(self.url, timeout_s=timeout_s, context=self.context)


@pytest.fixture(params=[False, True], ids=["http", "https"])
def scripted(request) -> Iterator[Scripted]:
    server = Scripted(tls=request.param)
    server.thread.start()
    yield server
    server.http.shutdown()
    server.http.server_close()


def asks(*bodies: dict) -> list[tuple[bytes, dict[str, str]]]:
    return [(json.dumps(body).encode(), {"Content-Type": "application/json"}) for body in bodies]


def test_many_requests_are_in_flight_at_once_from_the_calling_thread_and_answered_in_order(scripted):
    pool = scripted.pool(5)
    ours = lambda: {t for t in threading.enumerate() if "process_request_thread" not in t.name}  # noqa: E731
    threads_before = ours()
    # Later requests answer sooner: the answers still come back in the order of the requests.
    exchanges = pool.post_many("/send", asks(*({"n": n, "delay": 0.05 - n * 0.002} for n in range(24))), 6)
    assert [e.response.json()["n"] for e in exchanges] == list(range(24))
    assert scripted.most_in_flight == 6  # never more than asked, and not one by one
    assert ours() == threads_before  # no sending threads
    assert all(0 < e.elapsed_s < 1 for e in exchanges)
    # The connections are kept for the next batch: six of them, reused.
    again = pool.post_many("/send", asks(*({"n": n} for n in range(6))), 6)
    assert [e.response.status_code for e in again] == [200] * 6
    assert len(pool._idle) == 6
    pool.close()


def test_answers_with_a_length_in_chunks_or_up_to_the_close_are_read_whole(scripted):
    pool = scripted.pool(5)
    exchanges = pool.post_many("/send", asks({"n": 1, "how": "length"}, {"n": 2, "how": "chunked"},
                                             {"n": 3, "how": "until-close"}), 3)
    assert [e.response.json() for e in exchanges] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert exchanges[0].response.headers.get("X-SEEN") == "a, b"
    assert exchanges[0].response.reason_phrase == "OK"
    assert len(pool._idle) == 2  # the one that ended with the connection is not kept
    pool.close()


def test_a_broken_or_silent_server_fails_only_its_own_requests(scripted):
    pool = scripted.pool(0.5)
    started = time.perf_counter()
    exchanges = pool.post_many("/send", asks({"n": 0}, {"n": 1, "how": "garbage"}, {"n": 2, "how": "never"},
                                             *({"n": n} for n in range(3, 12))), 3)
    assert isinstance(exchanges[1].error, InvalidAnswer)
    assert isinstance(exchanges[2].error, TimeoutError)
    assert [e.response.json()["n"] for i, e in enumerate(exchanges) if i not in (1, 2)] == [0, *range(3, 12)]
    assert time.perf_counter() - started < 2  # the others went on while one waited for its timeout
    pool.close()


def test_requests_not_begun_by_the_deadline_are_left_unsent(scripted):
    pool = scripted.pool(5)
    deadline = time.monotonic() + 0.15
    exchanges = pool.post_many("/send", asks(*({"n": n, "delay": 0.1} for n in range(8))), 2, deadline)
    answered = [e for e in exchanges if e is not None]
    assert 2 <= len(answered) < 8 and exchanges[-1] is None
    assert all(e.response.status_code == 200 for e in answered)
    pool.close()


def test_many_at_once_survive_connections_the_server_dropped(server):
    pool = KeptAliveConnections(server.url, timeout_s=5)
    for _round in range(3):
        exchanges = pool.post_many("/base/send", [(json.dumps({"n": n}).encode(), {}) for n in range(10)], 4)
        assert [e.response.json()["echo"]["n"] for e in exchanges] == list(range(10))
        assert [e.response.status_code for e in exchanges] == [200 if n % 2 == 0 else 429 for n in range(10)]
    pool.close()
