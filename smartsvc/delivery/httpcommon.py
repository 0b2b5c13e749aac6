"""Pieces the HTTP push providers (and the webhook sender) share: TLS trust, P-256 signing keys,
``Retry-After``, latency, telling a dropped idle connection, sending one by one while answers are fast."""

from __future__ import annotations

import select
import socket
import ssl
import time
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

# Longest wait we accept from a push service's Retry-After (a bogus year-long value must not park a push).
MAX_RETRY_AFTER_S = 24 * 3600.0
# While a destination answers faster than this, a batch sends one request after the other from its own thread:
# sending threads would wait on almost nothing, and handing the GIL between them costs more CPU than they save
# (webhooks to a loopback receiver: 146 µs of CPU a send one by one, 260 µs with 8 threads; BENCHMARKS.md, 7).
FAST_ANSWER_S = 0.002

T = TypeVar("T")


def send_while_fast(items: Sequence[T], send: Callable[[T], Any], fast_s: float = FAST_ANSWER_S) -> list[T] | None:
    """Call ``send`` on ``items`` in order, from this thread, until a call takes longer than ``fast_s``.

    None when every call was fast (all sent); otherwise the items after the slow one, not sent (for the
    caller's sending threads)."""
    for n, item in enumerate(items):
        started = time.monotonic()
        send(item)
        if time.monotonic() - started > fast_s:
            return list(items[n + 1:])
    return None


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """The system's trust store, or only ``ca_file`` when given (a private or local push service)."""
    if ca_file is not None:
        return ssl.create_default_context(cafile=str(ca_file))
    return ssl.create_default_context()


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date); None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return min(max((when - now).total_seconds(), 0.0), MAX_RETRY_AFTER_S)


def elapsed_ms(started: float) -> int:
    """Milliseconds since ``started`` (a :func:`time.perf_counter` reading)."""
    return int(round((time.perf_counter() - started) * 1000))


def load_signing_key(pem: bytes, where: str = "key") -> ec.EllipticCurvePrivateKey:
    """The P-256 private key of a PEM (an APNs ``.p8`` file is one); ValueError naming ``where`` otherwise."""
    try:
        key = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"{where} is not a P-256 (ES256) private key")
    return key


def idle_connection_dropped(sock: socket.socket) -> bool:
    """True when an idle connection was closed by the server (readable while idle: EOF or junk)."""
    try:
        poller = select.poll()  # not select.select: a worker may hold more than 1024 descriptors
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True
