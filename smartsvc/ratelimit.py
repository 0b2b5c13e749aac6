"""Rate limiting: the per-request check and the embedded counter store.

:class:`RequestRateLimiter` counts each request (see its docstring).

The embedded store (:class:`InlineExpiryMemoryStorage`): ``limits``'
``MemoryStorage`` drops expired counters from a ``threading.Timer``
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

import math
import threading
import time
from typing import Callable

from flask import Flask, Response, g, request
from limits import parse_many
from limits.storage import MemoryStorage, storage_from_string
from werkzeug.exceptions import TooManyRequests

SCHEME = "smartsvc-memory"
EXPIRY_INTERVAL_S = 1.0
KEYS_KEEP_S = 60.0
KEYS_MAX = 10_000


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
    """The ``limits`` storage URI for ``SMARTSVC_RATE_LIMIT_STORAGE_URL``."""
    return f"{SCHEME}://" if url.rstrip("/") in ("memory:", "memory://") else url


class RequestRateLimiter:
    """The API's rate limit: every limit of ``SMARTSVC_RATE_LIMIT`` per caller and per endpoint.

    What flask-limiter did with our configuration (a fixed window per limit,
    counted per caller key and endpoint, requests matching no endpoint not
    counted, the first limit exceeded answers 429, ``X-RateLimit-*`` headers
    on every counted response), in one counter increment per limit, without
    resolving and filtering the limits on every request (~0.4 ms a request,
    measured by benchmark 2). Counters are ``limits``' own, in any storage
    ``limits`` knows (``memory://``, Redis, ...), under the same keys.
    """

    def __init__(self, limits: str, storage_url: str, key_func: Callable[[], str]) -> None:
        self._limits = sorted(parse_many(limits))
        self._storage = storage_from_string(storage_uri(storage_url))
        self._key_func = key_func
        # (caller, endpoint) -> ((storage key, window seconds, amount) per limit): the keys are built once
        # per caller and endpoint, not per request. Emptied every KEYS_KEEP_S (callers are addresses too, kept
        # no longer than their counters) and when it holds KEYS_MAX.
        self._keys: dict[tuple[str, str], tuple[tuple[str, int, int], ...]] = {}
        self._keys_until = 0.0

    def install(self, app: Flask) -> None:
        """Count every request to an endpoint before its view; add the headers to its response."""
        app.before_request(self.check)
        app.after_request(self.add_headers)

    def check(self) -> None:
        """Count this request against every limit; 429 (with Retry-After) at the first one exceeded."""
        endpoint = request.endpoint
        if not endpoint or endpoint.rpartition(".")[2] == "static":
            return
        caller = self._key_func()
        keys = self._keys_for(caller, endpoint)
        storage = self._storage
        state = None
        for key, expiry, amount in keys:
            count = storage.incr(key, expiry)
            if state is None or count > amount:
                state = (amount, max(0, amount - count), storage.get_expiry(key))
            if count > amount:
                g.rate_limit = state
                raise TooManyRequests(retry_after=max(1, math.ceil(state[2] - time.time())))
        g.rate_limit = state

    def _keys_for(self, caller: str, endpoint: str) -> tuple[tuple[str, int, int], ...]:
        now = time.monotonic()
        if now >= self._keys_until or len(self._keys) >= KEYS_MAX:
            self._keys = {}
            self._keys_until = now + KEYS_KEEP_S
        keys = self._keys.get((caller, endpoint))
        if keys is None:
            keys = tuple((item.key_for(caller, endpoint), item.get_expiry(), item.amount) for item in self._limits)
            self._keys[(caller, endpoint)] = keys
        return keys

    @staticmethod
    def add_headers(response: Response) -> Response:
        """``X-RateLimit-Limit``/``-Remaining``/``-Reset`` (epoch seconds) of the request's nearest limit."""
        state = g.get("rate_limit")
        if state is not None:
            # Added, not set: only this hook writes them, and ``set`` scans the headers for each (BENCHMARKS.md, 2).
            add = response.headers.add
            add("X-RateLimit-Limit", str(state[0]))
            add("X-RateLimit-Remaining", str(state[1]))
            add("X-RateLimit-Reset", str(int(state[2])))
        return response
