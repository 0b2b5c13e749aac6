"""The push providers' kept-alive connections against a local HTTP server (127.0.0.1, ephemeral port).

A connection the server closed while it sat idle (push services drop idle
connections) is replaced, not reported as a failed push; several threads
posting at once each get their own answer.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from smartsvc.delivery.httpcommon import KeptAliveConnections


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
