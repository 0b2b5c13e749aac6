"""Waking the outbox relay after commits, without a relay task per commit."""

from __future__ import annotations

import logging
import os
import threading
import uuid
from time import monotonic
from typing import Any, Callable

log = logging.getLogger(__name__)

# (seconds until the shared window ends, that window's id); (0, None): this process opened a window and
# wakes the relay now. See RedisWakeGate.
WakeGate = Callable[[], "tuple[float, str | None]"]
WAKE_KEY = "smartsvc:outbox-relay-woken"


class RelayWaker:
    """Calls ``wake()`` after a commit: at once, then at most once per ``interval_s``.

    A commit inside the interval arranges one wake-up at its end (a timer
    thread), so a committed message waits at most the interval before a relay
    runs, and a busy API sends a few relay tasks a second instead of one per
    request (each relay run costs a worker a transaction). ``interval_s`` 0:
    every commit wakes the relay. The state is per process: after a fork
    (gunicorn, Celery's pool) a child starts afresh.

    ``gate`` shares the interval between processes (:class:`RedisWakeGate`):
    a process whose commit falls in a window another process opened waits
    for the window's end, then wakes the relay unless a process opened the
    next window (whose wake-up, sent after this commit, relays it too).
    """

    def __init__(self, wake: Callable[[], None], interval_s: float, gate: WakeGate | None = None) -> None:
        self._wake = wake
        self._interval_s = interval_s
        self._gate = gate
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._last = float("-inf")
        self._timer: threading.Timer | None = None
        self._window: str | None = None  # the other process's window a timer waits out

    def __call__(self) -> None:
        """A commit wrote outbox rows: wake the relay now, or once the interval since the last wake-up ends."""
        if self._interval_s <= 0:
            self._wake()
            return
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's timer does not exist here
                self._pid, self._last, self._timer = os.getpid(), float("-inf"), None
            if self._timer is not None:
                return  # a wake-up is already arranged: it relays this commit's messages too
            wait, self._window = self._last + self._interval_s - monotonic(), None
            if wait <= 0 and self._gate is not None:
                wait, self._window = self._gate()
            if wait > 0:
                self._arrange(wait)
                return
            self._last = monotonic()
        self._wake()

    def _arrange(self, wait: float) -> None:
        self._timer = threading.Timer(wait, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            self._timer = None
            if self._gate is not None:
                waited_for = self._window
                wait, self._window = self._gate()
                if wait > 0:
                    if self._window == waited_for:
                        self._arrange(wait)  # the timer ran a little early: the same window
                    # Else another process opened the next window after this commit: its wake-up relays it.
                    return
            self._last = monotonic()
        self._wake()


class RedisWakeGate:
    """One wake-up window per ``interval_s`` for all processes sharing a Redis broker (``SET NX PX``).

    Without it every API and worker process woke the relay up to 1/interval
    times a second: with two of each, ~20 relay runs a second, a fifth of the
    workers' time under benchmark 4's load. Redis unreachable: the window is
    this process's own (the per-process interval still holds).
    """

    def __init__(self, url: str, interval_s: float, key: str = WAKE_KEY) -> None:
        self._url = url
        self._interval_ms = max(1, int(interval_s * 1000))
        self._key = key
        self._client: Any = None

    def __call__(self) -> tuple[float, str | None]:
        """(0, None) when this process opened a window (it wakes the relay now), else (seconds left, its id)."""
        window = uuid.uuid4().hex
        try:
            client = self._redis()
            if client.set(self._key, window, nx=True, px=self._interval_ms):
                return 0.0, None
            current, remaining = client.pipeline(transaction=False).get(self._key).pttl(self._key).execute()
        except Exception as exc:  # the broker's own failure shows when the wake-up is sent
            log.debug("relay wake-up window not shared", extra={"error": str(exc)})
            return 0.0, None
        # -2: the window ended between the two calls; -1 cannot happen (always set with an expiry).
        return (remaining / 1000 if remaining > 0 else 0.001), (current.decode() if current else None)

    def _redis(self) -> Any:
        if self._client is None:
            import redis  # only deployments with a Redis broker load it

            # redis-py's pool notices a fork and opens new connections in the child.
            self._client = redis.Redis.from_url(self._url, socket_timeout=1, socket_connect_timeout=1)
        return self._client
