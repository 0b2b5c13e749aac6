"""A lean loopback webhook receiver for benchmark 7: ``python -m bench.webhook_sink PORT``.

One asyncio process speaking just enough HTTP/1.1 (keep-alive, ``Content-Length``
bodies) to be far faster than what it measures, so the service is the bottleneck,
not the target. Paths:

- ``POST /ok/<name>`` — answered ``204`` at once; the request is recorded
  (path, the three Standard Webhooks headers, the body, the arrival time as
  Unix seconds) for the benchmark to check signatures and latencies afterwards;
- ``POST /hang/<name>`` — read and counted, never answered (a dead endpoint:
  the sender waits for its timeout);
- ``GET /count`` — ``{"<path>": n, ...}`` so far (cheap: polled while running);
- ``POST /dump`` — the records as JSON lines into the file named by the body
  (then forgotten), answered ``{"written": n}``.

The port is the only argument; ``ready <port>`` is printed when listening.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from typing import Any

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 1024 * 1024
HOOK_HEADERS = (b"webhook-id", b"webhook-timestamp", b"webhook-signature")


class Sink:
    """What the receiver holds: counts per path and the recorded ``/ok`` requests."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.records: list[tuple[float, str, dict[str, str], str]] = []
        self.hanging: list[asyncio.Transport] = []


def _response(status: str, body: bytes = b"", content_type: bytes = b"application/json") -> bytes:
    head = b"HTTP/1.1 " + status.encode() + b"\r\nContent-Length: " + str(len(body)).encode()
    if body:
        head += b"\r\nContent-Type: " + content_type
    return head + b"\r\n\r\n" + body


NO_CONTENT = _response("204 No Content")


class _Connection(asyncio.Protocol):
    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.hung = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.hung:
            return
        self.buffer += data
        while not self.hung:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEADER_BYTES:
                    self._close()
                return
            head = bytes(self.buffer[:end]).split(b"\r\n")
            headers: dict[bytes, bytes] = {}
            for line in head[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get(b"content-length", b"0") or 0)
            if length > MAX_BODY_BYTES:
                self._close()
                return
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4:end + 4 + length])
            del self.buffer[:end + 4 + length]
            self._handle(head[0], headers, body)

    def _handle(self, request_line: bytes, headers: dict[bytes, bytes], body: bytes) -> None:
        assert self.transport is not None
        now = time.time()
        parts = request_line.split(b" ")
        method, path = (parts[0], parts[1].decode("latin-1")) if len(parts) >= 2 else (b"", "")
        sink = self.sink
        if path.startswith("/ok/") or path.startswith("/hang/"):
            sink.counts[path] = sink.counts.get(path, 0) + 1
            if path.startswith("/hang/"):
                self.hung = True  # read, never answered: the connection stays open until the client gives up
                sink.hanging.append(self.transport)
                return
            sink.records.append((now, path, {k.decode(): headers.get(k, b"").decode("latin-1")
                                             for k in HOOK_HEADERS}, body.decode("utf-8", errors="replace")))
            self.transport.write(NO_CONTENT)
        elif method == b"GET" and path == "/count":
            self.transport.write(_response("200 OK", json.dumps(sink.counts).encode()))
        elif method == b"POST" and path == "/dump":
            written = _dump(sink, body.decode())
            self.transport.write(_response("200 OK", json.dumps({"written": written}).encode()))
        else:
            self.transport.write(_response("404 Not Found"))

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.hung and self.transport in self.sink.hanging:
            self.sink.hanging.remove(self.transport)


def _dump(sink: Sink, path: str) -> int:
    records, sink.records = sink.records, []
    with open(path, "w", encoding="utf-8") as out:
        for at, where, headers, body in records:
            out.write(json.dumps({"at": at, "path": where, "headers": headers, "body": body}) + "\n")
    return len(records)


async def serve(port: int) -> None:
    """Listen on 127.0.0.1:``port`` until killed."""
    sink = Sink()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(sink), "127.0.0.1", port, backlog=1024,
                                      reuse_address=True)
    print(f"ready {port}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> Any:
    args = sys.argv[1:] if argv is None else argv
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(int(args[0])))


if __name__ == "__main__":
    main()
