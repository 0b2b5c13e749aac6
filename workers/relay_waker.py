"""Waking the outbox relay after commits, without a relay task per commit."""

from __future__ import annotations

import os
import threading
from time import monotonic
from typing import Callable


class RelayWaker:
    """Calls ``wake()`` after a commit: at once, then at most once per ``interval_s`` in this process.

    A commit inside the interval arranges one wake-up at its end (a timer
    thread), so a committed message waits at most the interval before a relay
    runs, and a busy API sends a few relay tasks a second instead of one per
    request (each relay run costs a worker a transaction). ``interval_s`` 0:
    every commit wakes the relay. The state is per process: after a fork
    (gunicorn, Celery's pool) a child starts afresh.
    """

    def __init__(self, wake: Callable[[], None], interval_s: float) -> None:
        self._wake = wake
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._last = float("-inf")
        self._timer: threading.Timer | None = None

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
            wait = self._last + self._interval_s - monotonic()
            if wait > 0:
                self._timer = threading.Timer(wait, self._fire)
                self._timer.daemon = True
                self._timer.start()
                return
            self._last = monotonic()
        self._wake()

    def _fire(self) -> None:
        with self._lock:
            self._timer = None
            self._last = monotonic()
        self._wake()
