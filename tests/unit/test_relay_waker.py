"""Waking the outbox relay after commits: at once, then at most once per interval, nothing left behind."""

from __future__ import annotations

import logging
import threading
import time

from workers.relay_waker import RedisWakeGate, RelayWaker, Window


class Wakes:
    def __init__(self) -> None:
        self.count = 0
        self.event = threading.Event()

    def __call__(self) -> None:
        self.count += 1
        self.event.set()


def test_the_first_commit_wakes_the_relay_at_once_and_later_ones_share_one_wake_up_at_the_intervals_end():
    wakes = Wakes()
    waker = RelayWaker(wakes, interval_s=0.5)

    waker()
    assert wakes.count == 1
    wakes.event.clear()
    for _ in range(5):  # commits inside the interval: none wakes at once, none is forgotten
        waker()
    assert wakes.count == 1
    assert wakes.event.wait(timeout=10)
    assert wakes.count == 2
    assert waker._timer is None


def test_with_no_interval_every_commit_wakes_the_relay():
    wakes = Wakes()
    waker = RelayWaker(wakes, interval_s=0)
    for _ in range(3):
        waker()
    assert wakes.count == 3


def test_a_forked_child_does_not_wait_for_its_parents_timer():
    wakes = Wakes()
    waker = RelayWaker(wakes, interval_s=60)
    waker()
    waker()  # arranges a wake-up in a minute, in this process
    assert wakes.count == 1 and waker._timer is not None
    waker._timer.cancel()
    waker._pid = -1  # as a child sees it after a fork: the timer thread is not there
    waker()
    assert wakes.count == 2


class SharedWindows:
    """A stand-in for RedisWakeGate: one window at a time for every waker sharing it; tests open others'."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.window_id = ""
        self.until = float("-inf")
        self.opened = 0

    def open(self, window_id: str, for_s: float) -> None:
        """Another process opens a window (and wakes the relay, before anything this test commits next)."""
        self.window_id, self.until = window_id, time.monotonic() + for_s

    def expire(self) -> None:
        self.until = float("-inf")

    def __call__(self) -> Window:
        left = self.until - time.monotonic()
        if left > 0:
            return Window(opened=False, window_id=self.window_id, left_s=left)
        self.opened += 1
        self.open(f"mine-{self.opened}", self.interval_s)
        return Window(opened=True, window_id=self.window_id)


def test_a_commit_that_opens_the_shared_window_wakes_the_relay_at_once():
    gate, wakes = SharedWindows(0.2), Wakes()
    waker = RelayWaker(wakes, 0.2, gate)
    waker()
    assert wakes.count == 1 and waker._timer is None


def test_a_commit_right_after_this_process_woke_the_relay_is_relayed_once_its_own_window_ends():
    gate, wakes = SharedWindows(0.2), Wakes()
    waker = RelayWaker(wakes, 0.2, gate)
    waker()
    wakes.event.clear()
    waker()  # the wake-up just sent may be taken before this commit
    assert wakes.count == 1
    assert wakes.event.wait(timeout=10)
    assert wakes.count == 2


def test_a_commit_inside_another_processs_window_is_relayed_once_that_window_ends():
    gate, wakes = SharedWindows(0.2), Wakes()
    waker = RelayWaker(wakes, 0.2, gate)
    gate.open("other", 0.2)  # its wake-up may have gone before the commit below
    waker()
    assert wakes.count == 0 and waker._timer is not None
    assert wakes.event.wait(timeout=10)  # at the window's end this process opens the next one and wakes
    assert wakes.count == 1 and waker._timer is None


def test_a_commit_after_the_window_a_timer_waits_for_was_replaced_waits_for_the_new_window():
    """The race that lost wake-ups: the window the timer waited for ended and another process opened the
    next one (waking the relay) before this process's next commit. That wake-up came before the commit,
    so the commit must wait for the new window's end, not count on it."""
    gate, wakes = SharedWindows(0.2), Wakes()
    waker = RelayWaker(wakes, 0.2, gate)
    gate.open("first", 0.15)
    waker()  # waits for the end of "first"
    gate.open("second", 0.6)  # "first" ended, another process opened "second" and woke the relay …
    waker()  # … before this commit
    time.sleep(0.3)  # the first timer's time has passed: "second" is still open
    assert wakes.count == 0 and waker._timer is not None
    assert wakes.event.wait(timeout=10)  # "second" ends: this process opens the next window and wakes
    assert wakes.count == 1


def waiting_in_anothers_window(interval_s: float) -> tuple[SharedWindows, Wakes, RelayWaker, threading.Timer]:
    """A commit made inside another process's window: its timer waits for that window's end."""
    gate, wakes = SharedWindows(interval_s), Wakes()
    waker = RelayWaker(wakes, interval_s, gate)
    gate.open("other", interval_s)
    waker()
    timer = waker._timer
    assert timer is not None and wakes.count == 0
    return gate, wakes, waker, timer


def test_a_timer_that_finds_a_window_opened_after_the_commit_leaves_the_wake_up_to_its_opener():
    gate, wakes, waker, timer = waiting_in_anothers_window(0.1)
    gate.open("after", 5)  # another process opened the next window after the commit: its wake-up relays it
    timer.join(timeout=10)
    assert wakes.count == 0 and waker._timer is None


def test_a_commit_that_opens_the_window_while_a_timer_waits_wakes_now_and_cancels_the_timer():
    gate, wakes, waker, timer = waiting_in_anothers_window(0.2)
    gate.expire()
    waker()  # opens the next window: its wake-up, sent now, relays both commits
    assert wakes.count == 1 and waker._timer is None
    timer.join(timeout=10)
    gate.expire()  # even with no window open when the old timer would have fired, it does nothing
    time.sleep(0.05)
    assert wakes.count == 1


def test_without_redis_the_gate_lets_every_commit_wake_the_relay_and_says_so_once(caplog):
    gate = RedisWakeGate("redis://127.0.0.1:1/0", 0.2)  # nothing listens there
    wakes = Wakes()
    waker = RelayWaker(wakes, 0.2, gate)
    with caplog.at_level(logging.DEBUG, logger="workers.relay_waker"):
        for _ in range(3):
            waker()
    assert wakes.count == 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "not shared" in warnings[0].getMessage()
