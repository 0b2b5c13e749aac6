"""On Redis, every process shares one relay wake-up window, and no commit is left without a wake-up after it.

Several processes commit in bursts with quiet gaps between them, their
threads slowed by CPU work (as a busy API or worker slows its timer threads).
Each commit must be followed by a wake-up from some process before the next
burst begins (a later burst would otherwise hide a lost one), and all of them
together send at most one wake-up per window.
"""

from __future__ import annotations

import bisect
import multiprocessing
import random
import time
import uuid

import pytest

from workers.relay_waker import RedisWakeGate, RelayWaker

REDIS_DB = 14  # the pipeline tests count up from 4, the worker tests use 1, the priority test 15
INTERVAL_S = 0.02
PERIOD_S, BURST_S = 0.25, 0.1  # each period: a burst of commits, then quiet
PROCESSES, BURSTS = 4, 16

pytestmark = pytest.mark.redis


def _commit_in_bursts(url: str, key: str, start: float, seed: int, results: "multiprocessing.Queue") -> None:
    """One process: a waker on the shared window, commits in each burst; reports commit and wake-up times."""
    wakes: list[float] = []
    gate = RedisWakeGate(url, INTERVAL_S, key=key)
    gate()  # imports redis and connects; the window it opens ends long before the start
    waker = RelayWaker(lambda: wakes.append(time.monotonic()), INTERVAL_S, gate)
    rnd, commits = random.Random(seed), []
    for burst in range(BURSTS):
        begin = start + burst * PERIOD_S
        time.sleep(max(0.0, begin - time.monotonic()))
        while time.monotonic() < begin + BURST_S:
            busy_until = time.monotonic() + rnd.random() * 0.006  # holds the GIL: timer threads run late
            while time.monotonic() < busy_until:
                pass
            time.sleep(rnd.random() * 0.003)
            commits.append(time.monotonic())
            waker()
    time.sleep(PERIOD_S)
    results.put((commits, wakes))


def test_processes_sharing_the_window_leave_no_commit_without_a_wake_up_after_it(redis_server):
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    key = f"test:relay-woken:{uuid.uuid4().hex}"
    start = time.monotonic() + 5  # spawned interpreters import the code first
    processes = [context.Process(target=_commit_in_bursts, args=(redis_server.url(REDIS_DB), key, start, seed, results))
                 for seed in range(PROCESSES)]
    for process in processes:
        process.start()
    try:
        reports = [results.get(timeout=60) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()

    commits = sorted(t for commits, _ in reports for t in commits)
    wakes = sorted(t for _, wakes in reports for t in wakes)
    assert len(commits) > PROCESSES * BURSTS * 5
    unrelayed = []
    for commit in commits:
        next_burst = start + (int((commit - start) // PERIOD_S) + 1) * PERIOD_S
        after = bisect.bisect_left(wakes, commit)
        if after == len(wakes) or wakes[after] >= next_burst:
            unrelayed.append(round(commit - start, 4))
    assert unrelayed == []
    # Each wake-up opened a window and windows do not overlap: one per window for all processes together
    # (each process on its own would send up to one per interval: ~PROCESSES times as many).
    last_commit_s = BURST_S + 0.01  # a burst's last commit may start just before its end, then run late
    windows_per_burst = last_commit_s / INTERVAL_S + 3  # + partial windows at each end + the one waited for
    assert len(wakes) <= BURSTS * windows_per_burst, f"{len(wakes)} wake-ups for {BURSTS} bursts"


def test_the_gate_opens_one_window_per_interval_and_names_the_open_one(redis_server):
    key = f"test:relay-woken:{uuid.uuid4().hex}"
    api = RedisWakeGate(redis_server.url(REDIS_DB), 0.3, key=key)
    worker = RedisWakeGate(redis_server.url(REDIS_DB), 0.3, key=key)

    opened = api()
    assert opened.opened and opened.window_id
    found = worker()
    assert not found.opened and found.window_id == opened.window_id and 0 < found.left_s <= 0.3
    time.sleep(found.left_s + 0.05)
    reopened = worker()
    assert reopened.opened and reopened.window_id != opened.window_id
    assert api().window_id == reopened.window_id
