"""Waking the outbox relay after commits, without a relay task per commit."""

from __future__ import annotations

import logging
import os
import threading
import uuid
from dataclasses import dataclass
from time import monotonic
from typing import Any, Callable, Protocol

log = logging.getLogger(__name__)

WAKE_KEY = "smartsvc:outbox-relay-woken"


@dataclass(frozen=True)
class Window:
    """What a process found when it asked for a wake-up window after a commit.

    ``opened``: this process opened a new window, so it wakes the relay now
    (after the commit). Otherwise ``window_id`` names the window that was
    open, ``left_s`` its remaining time.
    """

    opened: bool
    window_id: str = ""
    left_s: float = 0.0


class WakeGate(Protocol):
    """Opens a wake-up window shared by several processes, or says which one is open."""

    def __call__(self) -> Window: ...


class RelayWaker:
    """Calls ``wake()`` after a commit: at once, then at most once per ``interval_s``.

    A commit inside the interval arranges one wake-up at its end (a timer
    thread), so a committed message waits at most the interval before a relay
    runs, and a busy API sends a few relay tasks a second instead of one per
    request (each relay run costs a worker a transaction). ``interval_s`` 0:
    every commit wakes the relay. Without a ``gate`` the interval is this
    process's own; after a fork (gunicorn, Celery's pool) a child starts
    afresh.

    With a ``gate`` (:class:`RedisWakeGate`) the interval is one window shared
    by every process. The rule that keeps every commit relayed: a wake-up
    sent after a commit relays it. A commit either opens a window (and wakes
    the relay itself, after the commit) or finds window W open; W's wake-up
    may have gone before the commit, so the process waits for W's end and
    asks again. Then it either opens the next window itself (and wakes), or
    finds a window other than W: that one can only have opened after W
    expired, so after the commit, and its opener's wake-up relays the commit.
    Each commit replaces the remembered W with the window it found, so a
    timer never relies on a window older than the latest commit.
    """

    def __init__(self, wake: Callable[[], None], interval_s: float, gate: WakeGate | None = None) -> None:
        self._wake = wake
        self._interval_s = interval_s
        self._gate = gate
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._last = float("-inf")
        self._timer: threading.Timer | None = None
        self._window_id = ""  # with a gate: the window found after this process's latest commit

    def __call__(self) -> None:
        """A commit wrote outbox rows: wake the relay now, or once the current window ends."""
        if self._interval_s <= 0:
            self._wake()
            return
        if self._pid != os.getpid():
            self._start_afresh()
        with self._lock:
            wake_now = self._after_commit_shared() if self._gate is not None else self._after_commit_local()
        if wake_now:
            self._wake()

    def _start_afresh(self) -> None:
        """In a forked child: the parent's timer thread is not here, and its lock may have been held."""
        self._pid, self._lock = os.getpid(), threading.Lock()
        self._last, self._timer, self._window_id = float("-inf"), None, ""

    def _after_commit_local(self) -> bool:
        if self._timer is not None:
            return False  # a wake-up is already arranged: it relays this commit's messages too
        wait = self._last + self._interval_s - monotonic()
        if wait > 0:
            self._arrange(wait)
            return False
        self._last = monotonic()
        return True

    def _after_commit_shared(self) -> bool:
        assert self._gate is not None
        found = self._gate()
        if found.opened:
            self._cancel()  # this wake-up, sent now, relays what an arranged one waited for
            return True
        if self._timer is not None and found.window_id == self._window_id:
            return False  # the timer already waits for this window's end
        self._cancel()
        self._window_id = found.window_id
        self._arrange(found.left_s)
        return False

    def _arrange(self, wait: float) -> None:
        timer = threading.Timer(wait, self._fire)
        timer.daemon = True
        self._timer = timer
        timer.start()

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        with self._lock:
            if threading.current_thread() is not self._timer:
                return  # replaced by a later commit's timer while this one waited for the lock
            self._timer = None
            if self._gate is not None:
                found = self._gate()
                if not found.opened:
                    if found.window_id == self._window_id:
                        self._arrange(found.left_s)  # woke a little early: the same window
                    # Else a window that opened after the latest commit: its opener's wake-up relays it.
                    return
            self._last = monotonic()
        self._wake()


# Atomic, so the window found is the one that refused this process (it cannot expire in between).
_OPEN_OR_FIND = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {1, ARGV[1], 0} end
return {0, redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}
"""


class RedisWakeGate:
    """One wake-up window per ``interval_s`` for all processes sharing a Redis broker.

    Without it every API and worker process woke the relay up to 1/interval
    times a second: with two of each, ~20 relay runs a second, a fifth of the
    workers' time under benchmark 4's load. One round trip per commit (a Lua
    script: ``SET NX PX``, else the open window's id and time left). Redis
    unreachable: this process opens its own window each time and wakes the
    relay (a wake-up too many is harmless, one too few is not).
    """

    def __init__(self, url: str, interval_s: float, key: str = WAKE_KEY) -> None:
        self._url = url
        self._interval_ms = max(1, int(interval_s * 1000))
        self._key = key
        self._script: Any = None
        self._warned = False

    def __call__(self) -> Window:
        """Open a window (``opened``) or name the one that is open and its time left."""
        window_id = uuid.uuid4().hex
        try:
            opened, found_id, left_ms = self._open_or_find()(keys=[self._key], args=[window_id, self._interval_ms])
        except Exception as exc:  # the broker's own failure shows when the wake-up is sent
            # Once per process: a broker that refuses scripts (ACLs) would otherwise log on every commit.
            (log.debug if self._warned else log.warning)(
                "relay wake-up window not shared: this commit wakes the relay itself", extra={"error": str(exc)})
            self._warned = True
            return Window(opened=True)
        if opened or left_ms < 0:  # < 0: a key without an expiry, not ours to trust
            return Window(opened=True, window_id=window_id)
        return Window(opened=False, window_id=found_id.decode(), left_s=max(left_ms, 1) / 1000)

    def _open_or_find(self) -> Any:
        if self._script is None:
            import redis  # only deployments with a Redis broker load it

            # redis-py's pool notices a fork and opens new connections in the child.
            client = redis.Redis.from_url(self._url, socket_timeout=1, socket_connect_timeout=1)
            self._script = client.register_script(_OPEN_OR_FIND)
        return self._script
