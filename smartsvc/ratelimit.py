"""The embedded rate-limit counter store: ``limits``' in-memory storage without a thread per request.

``limits.storage.MemoryStorage`` drops expired counters from a ``threading.Timer``
that runs 10 ms after the last hit, and starts a new one whenever the previous
has finished: under steady traffic that is a new thread every few requests, and
``Thread.start`` waits for the thread to be scheduled (~0.1–1 ms on a busy
2-core machine, measured by benchmark 2). Counts never depend on that clean-up
(every read checks the expiry itself), so this storage does it in the calling
thread instead, at most once per :data:`EXPIRY_INTERVAL_S`.

Used for ``SMARTSVC_RATE_LIMIT_STORAGE_URL=memory://`` (the default); Redis
and the other stores are ``limits``' own.
"""

from __future__ import annotations

import threading
import time

from limits.storage import MemoryStorage

SCHEME = "smartsvc-memory"
EXPIRY_INTERVAL_S = 1.0


class InlineExpiryMemoryStorage(MemoryStorage):
    """``memory://`` with the expired-counter sweep done inline, once a second at most."""

    STORAGE_SCHEME = [SCHEME]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: str) -> None:
        self._sweep_lock = threading.Lock()
        self._next_sweep = 0.0
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)

    # MemoryStorage calls ``self.__schedule_expiry()`` on every hit (name-mangled to this name).
    def _MemoryStorage__schedule_expiry(self) -> None:
        now = time.monotonic()
        if now < self._next_sweep or not self._sweep_lock.acquire(blocking=False):
            return
        try:
            self._next_sweep = now + EXPIRY_INTERVAL_S
            self._MemoryStorage__expire_events()  # type: ignore[attr-defined]
        finally:
            self._sweep_lock.release()


def storage_uri(url: str) -> str:
    """The storage URI flask-limiter gets for ``SMARTSVC_RATE_LIMIT_STORAGE_URL``."""
    return f"{SCHEME}://" if url.rstrip("/") in ("memory:", "memory://") else url
