"""Kept-alive HTTP/1.1 connections to one origin for small POSTs: one at a time, or many at once from one thread.

:meth:`KeptAliveConnections.post_many` keeps up to ``in_flight`` requests
outstanding, each on its own connection (never two on one: a POST must not
be pipelined, RFC 9112 §9.3.2), and reads the answers in the order they come
(``poll``), so a batch of pushes costs one thread and no handing of the GIL
between sending threads. Answers are parsed by httptools (llhttp, in C): the
standard library's ``http.client`` parses headers with the ``email``
package, which cost more CPU than the rest of a push's send together
(BENCHMARKS.md §6). No redirects are followed.
"""

from __future__ import annotations

import json
import select
import socket
import ssl
import threading
import time
from collections import deque
from typing import Any, Mapping, Sequence
from urllib.parse import urlsplit

import httptools

from .httpcommon import idle_connection_dropped

MAX_IDLE_CONNECTIONS = 32
_READ_SIZE = 65536
_POLL_EVENTS = select.POLLIN | select.POLLERR | select.POLLHUP


class InvalidAnswer(ConnectionError):
    """The server's answer is not HTTP/1.1 (or the connection ended in the middle of it)."""


class ResponseHeaders(dict):
    """A response's headers by lower-case name (a repeated header's values joined by ", "); look-ups ignore case."""

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return super().__contains__(name.lower() if isinstance(name, str) else name)


class PlainResponse:
    """An answer read in full, with the attributes of an httpx response the providers read."""

    __slots__ = ("status_code", "reason_phrase", "headers", "content")

    def __init__(self, status_code: int, reason_phrase: str, headers: ResponseHeaders, content: bytes) -> None:
        self.status_code, self.reason_phrase, self.headers, self.content = status_code, reason_phrase, headers, content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class Exchange:
    """One request of :meth:`KeptAliveConnections.post_many`: its answer or the error, and the seconds it took
    from its request being written to its answer being read."""

    __slots__ = ("response", "error", "elapsed_s")

    def __init__(self, response: PlainResponse | None, error: BaseException | None, elapsed_s: float) -> None:
        self.response, self.error, self.elapsed_s = response, error, elapsed_s


class Answer:
    """An HTTP/1.1 answer being read; httptools calls the ``on_*`` methods as it parses what :meth:`feed` gives it."""

    __slots__ = ("parser", "reason", "headers", "body", "received", "headers_done", "complete", "keep_alive",
                 "messages")

    def __init__(self) -> None:
        self.parser: Any = httptools.HttpResponseParser(self)
        self.reason, self.headers, self.body = b"", ResponseHeaders(), bytearray()
        self.received = self.messages = 0
        self.headers_done = self.complete = self.keep_alive = False

    def on_message_begin(self) -> None:
        self.messages += 1

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        self.headers[key] = f"{dict.get(self.headers, key)}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        self.headers_done = True
        self.keep_alive = self.parser.should_keep_alive()  # only meaningful here, not after the body

    def on_body(self, data: bytes) -> None:
        self.body += data

    def on_message_complete(self) -> None:
        self.complete = True

    def feed(self, data: bytes) -> bool:
        """Parse ``data``; True once the whole answer is in. Bytes after it (a second answer to one request)
        are a fault of the server: the answer stands, the connection is not kept."""
        self.received += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if not self.complete:
                raise InvalidAnswer(f"not an HTTP/1.1 answer: {exc}") from None
        if self.complete and self.messages > 1:
            self.keep_alive = False
        return self.complete

    def end_of_connection(self) -> bool:
        """The server closed the connection: True when that ends the answer (a body without a length)."""
        if self.headers_done and "content-length" not in self.headers and "transfer-encoding" not in self.headers:
            self.complete, self.keep_alive = True, False
        return self.complete

    def response(self) -> PlainResponse:
        status = self.parser.get_status_code()
        self.parser = None  # the parser refers back to this answer: no cycle left for the collector
        return PlainResponse(status, self.reason.decode("latin-1"), self.headers, bytes(self.body))


class _Flight:
    """A request written on a connection, waiting for its answer."""

    __slots__ = ("index", "sock", "reused", "started", "answer")

    def __init__(self, index: int, sock: socket.socket, reused: bool, started: float) -> None:
        self.index, self.sock, self.reused, self.started = index, sock, reused, started
        self.answer = Answer()


class KeptAliveConnections:
    """Kept-alive HTTP/1.1 connections to one origin for small POSTs; each is used by one request at a time.

    A request goes out in one write (``http.client`` makes two: headers, then body, which on loopback costs
    a second round through the receiver's TCP stack). Several threads may post at once; each takes its own
    connections. A reused connection the server closed just before the request (its idle timeout racing
    ours) gets the request once more on a new connection: nothing was answered on it.
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

    def _give_back(self, sock: socket.socket) -> None:
        with self._lock:
            if len(self._idle) < MAX_IDLE_CONNECTIONS:
                self._idle.append(sock)
                return
        sock.close()

    def _request(self, path: str, body: bytes, headers: Mapping[str, str]) -> bytes:
        parts = [path, *headers, *headers.values()]
        if any("\r" in part or "\n" in part for part in parts):
            raise ValueError("a header or the path contains a line break")
        lines = [f"POST {path} HTTP/1.1", f"Host: {self._host_header}", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> PlainResponse:
        """POST ``body`` and read the whole answer; OSError when the network fails or the answer is not HTTP."""
        exchange = self.post_many(path, [(body, headers)], 1)[0]
        assert exchange is not None
        if exchange.error is not None:
            raise exchange.error
        assert exchange.response is not None
        return exchange.response

    def post_many(self, path: str, requests: Sequence[tuple[bytes, Mapping[str, str]]], in_flight: int,
                  deadline: float | None = None) -> list[Exchange | None]:
        """POST each (body, headers) to ``path``, up to ``in_flight`` at a time; an :class:`Exchange` per request,
        in order. None for the requests not begun by ``deadline`` (a :func:`time.monotonic` reading).

        Each request waits at most ``timeout_s`` for its answer. ValueError, before anything is sent, when a
        header or the path has a line break.
        """
        raw = [self._request(path, body, headers) for body, headers in requests]
        exchanges: list[Exchange | None] = [None] * len(raw)
        waiting = deque(range(len(raw)))
        flights: dict[int, _Flight] = {}
        poller = select.poll()

        def begin(index: int, sock: socket.socket | None = None, reused: bool = True) -> None:
            """Write request ``index`` on ``sock`` (one that just answered, or a new one) or on one taken."""
            try:
                if sock is None:
                    sock, reused = self._take()
                started = time.perf_counter()
                try:
                    sock.sendall(raw[index])
                except (ConnectionResetError, BrokenPipeError):
                    if not reused:
                        raise
                    sock.close()
                    sock, reused = self._connect(), False
                    started = time.perf_counter()
                    sock.sendall(raw[index])
                # Reads never block: poll tells when to read, and a TLS connection can be readable with no
                # answer in it yet (a session ticket), where a blocking read would hold up every other request.
                sock.settimeout(0.0)
            except (OSError, ValueError) as exc:
                if sock is not None:
                    sock.close()
                exchanges[index] = Exchange(None, exc, 0.0)
                return
            flights[sock.fileno()] = _Flight(index, sock, reused, started)
            poller.register(sock, _POLL_EVENTS)

        def end(flight: _Flight, error: BaseException | None) -> socket.socket | None:
            """Record the flight's outcome; its connection when it may carry the next request."""
            del flights[flight.sock.fileno()]
            poller.unregister(flight.sock)
            elapsed = time.perf_counter() - flight.started
            if error is not None:
                flight.sock.close()
                exchanges[flight.index] = Exchange(None, error, elapsed)
                return None
            keep = flight.answer.keep_alive
            exchanges[flight.index] = Exchange(flight.answer.response(), None, elapsed)
            if keep:
                flight.sock.settimeout(self.timeout_s)
                return flight.sock
            flight.sock.close()
            return None

        def read(flight: _Flight) -> socket.socket | None:
            """Read what the connection has; the connection to reuse, when the answer is complete."""
            sock, answer = flight.sock, flight.answer
            try:
                data = sock.recv(_READ_SIZE)
                while data:
                    if answer.feed(data):
                        return end(flight, None)
                    if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                        return None  # the rest is still on its way
                    data = sock.recv(_READ_SIZE)
                if answer.received == 0 and flight.reused:
                    return send_again(flight)
                if answer.end_of_connection():
                    return end(flight, None)
                return end(flight, InvalidAnswer("the connection closed before the whole answer"))
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return None  # nothing of the answer yet (or only part of a TLS record)
            except (ConnectionResetError, BrokenPipeError) as exc:
                if answer.received == 0 and flight.reused:
                    return send_again(flight)
                return end(flight, exc)
            except (OSError, InvalidAnswer) as exc:
                return end(flight, exc)

        def send_again(flight: _Flight) -> None:
            """A reused connection closed before any answer (dropped while idle): the request once more, anew."""
            del flights[flight.sock.fileno()]
            poller.unregister(flight.sock)
            flight.sock.close()
            try:
                sock = self._connect()
            except OSError as exc:
                exchanges[flight.index] = Exchange(None, exc, time.perf_counter() - flight.started)
                return None
            begin(flight.index, sock, reused=False)
            return None

        try:
            while waiting or flights:
                while waiting and len(flights) < in_flight:
                    if deadline is not None and time.monotonic() >= deadline:
                        waiting.clear()
                        break
                    begin(waiting.popleft())
                if not flights:
                    continue
                now = time.perf_counter()
                wait_s = min(f.started for f in flights.values()) + self.timeout_s - now
                events = poller.poll(max(wait_s, 0.0) * 1000.0) if wait_s > 0 else []
                if not events:
                    now = time.perf_counter()
                    for flight in [f for f in flights.values() if now - f.started >= self.timeout_s]:
                        end(flight, TimeoutError(f"no answer within {self.timeout_s:g} s"))
                    continue
                for fd, _event in events:
                    flight = flights.get(fd)
                    if flight is None:
                        continue
                    sock = read(flight)
                    if sock is None:
                        continue
                    if waiting and (deadline is None or time.monotonic() < deadline):
                        begin(waiting.popleft(), sock)
                    else:
                        self._give_back(sock)
        finally:
            for flight in list(flights.values()):  # an exception escaped (a bug, KeyboardInterrupt)
                flight.sock.close()
        return exchanges

    def close(self) -> None:
        """Close the idle connections."""
        with self._lock:
            idle, self._idle = self._idle, []
        for sock in idle:
            sock.close()
