"""Waking the outbox relay after commits: at once, then at most once per interval, nothing left behind."""

from __future__ import annotations

import threading

from workers.relay_waker import RelayWaker


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


class SharedWindow:
    """A stand-in for RedisWakeGate: one window per interval for every waker that shares it."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.opened_at = float("-inf")
        self.window = 0

    def __call__(self) -> tuple[float, str | None]:
        import time

        now = time.monotonic()
        left = self.opened_at + self.interval_s - now
        if left > 0:
            return left, str(self.window)
        self.opened_at, self.window = now, self.window + 1
        return 0.0, None


def test_processes_sharing_a_window_wake_the_relay_once_and_a_commit_in_it_is_relayed_at_its_end():
    gate = SharedWindow(0.5)
    api, worker = Wakes(), Wakes()
    first, second = RelayWaker(api, 0.5, gate), RelayWaker(worker, 0.5, gate)

    first()  # opens the window and wakes the relay
    second()  # a commit inside the other process's window: no second relay task now …
    assert (api.count, worker.count) == (1, 0)
    assert worker.event.wait(timeout=10)  # … but one when the window ends, after this commit
    assert worker.count == 1 and second._timer is None


def test_a_commit_waiting_for_a_window_is_covered_when_another_process_opens_the_next_one_first():
    gate = SharedWindow(0.3)
    api, worker = Wakes(), Wakes()
    first, second = RelayWaker(api, 0.3, gate), RelayWaker(worker, 0.3, gate)
    first()
    second()  # waits for the end of the api's window
    assert second._timer is not None
    second._timer.cancel()
    gate.opened_at = float("-inf")
    api.event.clear()
    first._last = float("-inf")
    first()  # the api opens the next window first: its wake-up comes after the worker's commit
    assert api.count == 2
    second._fire()
    assert worker.count == 0 and second._timer is None
