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
