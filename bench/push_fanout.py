"""Benchmark 6's fan-out: forked worker processes (as Celery's prefork pool) sending pushes with threads.

:func:`fan_out` starts the processes, releases them together and collects each one's count and CPU
time; the ``*_setup`` functions build, inside each child, what one send does: the provider alone
(one message, or many to one device), a delivery task per suggestion, or a batch per claim.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections import deque
from datetime import timedelta
from typing import Any, Callable

from bench.common import summarize

def message(i: int, token: str) -> Any:
    """The ``i``-th benchmark notification to the device ``token``."""
    import uuid

    from smartsvc.delivery.message import PushMessage
    from smartsvc.timeutil import utcnow

    now = utcnow()
    return PushMessage(user_id=uuid.UUID(int=i), device_id=uuid.UUID(int=i + 1), platform="fcm",
                       suggestion_id=uuid.UUID(int=i + 2), kind="spots_near_destination",
                       title="3 spots that fit your car", body="120 m from your destination, free until 18:00",
                       collapse_key=f"spots:trip-{i}", expires_at=now + timedelta(minutes=30), at=now, token=token)


def _worker(setup: Callable[[], Callable[[Any], bool]], items: list[Any], threads: int, ready: Any,
            out: Any) -> None:
    """One worker process: set up (connections, token), wait for the others, then drain ``items`` with threads."""
    try:
        handle = setup()
        queue = deque(items)
        done: list[tuple[bool, float]] = []
        errors: list[str] = []
        lock = threading.Lock()

        def drain() -> None:
            clock = time.perf_counter
            while True:
                try:
                    item = queue.popleft()
                except IndexError:
                    return
                t = clock()
                try:
                    ok = handle(item)
                except Exception as exc:  # counted and reported: a broken delivery path fails the benchmark
                    ok = False
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                elapsed = clock() - t
                with lock:
                    done.append((ok, elapsed))

        ready.wait()
        cpu0 = time.process_time()
        pool = [threading.Thread(target=drain) for _ in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        out.put({"ok": sum(ok for ok, _ in done), "done": len(done), "cpu_s": time.process_time() - cpu0,
                 "finished": time.perf_counter(), "latencies": [e for _, e in done], "errors": errors[:3],
                 "error_count": len(errors)})
    except BaseException as exc:  # the parent must not hang on a worker that failed to start
        out.put({"error": f"{type(exc).__name__}: {exc}"})
        raise


def fan_out(setup: Callable[[], Callable[[Any], bool]], items: list[Any], processes: int, threads: int
            ) -> dict[str, Any]:
    """Run ``handle(item)`` over ``items`` in ``processes`` forked workers × ``threads``; rates and latencies.

    The clock starts when every worker has finished its set-up.
    """
    mp = multiprocessing.get_context("fork")
    ready, out = mp.Barrier(processes + 1), mp.Queue()
    procs = [mp.Process(target=_worker, args=(setup, items[p::processes], threads, ready, out), daemon=True)
             for p in range(processes)]
    for proc in procs:
        proc.start()
    try:
        ready.wait(timeout=120)
    except threading.BrokenBarrierError:
        reports = [out.get(timeout=5) for _ in range(processes) if not out.empty()]
        raise RuntimeError(f"a worker did not start: {reports}") from None
    started = time.perf_counter()
    reports = [out.get(timeout=900) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    failed = [r["error"] for r in reports if "error" in r] + [e for r in reports for e in r.get("errors", [])]
    if failed:
        count = sum(r.get("error_count", 1) for r in reports if "error" in r or r.get("errors"))
        raise RuntimeError(f"{count} item(s) raised in the workers, first: {failed[0]}")
    wall = max(r["finished"] for r in reports) - started
    ok = sum(r["ok"] for r in reports)
    cpu = sum(r["cpu_s"] for r in reports)
    return {"processes": processes, "threads": threads, "items": len(items), "ok": ok, "wall_s": wall,
            "items_per_s": ok / wall if wall > 0 else None, "worker_cpu_s": cpu,
            "latency": summarize([e for r in reports for e in r["latencies"]])}


def provider_setup(env: dict[str, str]) -> Callable[[], Callable[[Any], bool]]:
    """A worker's set-up for "provider alone": the provider the settings configure, its token and pool warm."""

    def setup() -> Callable[[Any], bool]:
        from smartsvc.config import load_settings
        from smartsvc.delivery.fcm import fcm_provider

        provider = fcm_provider(load_settings(env))
        assert provider is not None, "SMARTSVC_FCM_CREDENTIALS is set: the FCM provider is configured"
        assert provider.send(message(0, "bench-warm-up")).ok  # the OAuth token and a first connection
        return lambda message: provider.send(message).ok

    return setup


def provider_many_setup(env: dict[str, str]) -> Callable[[], Callable[[Any], bool]]:
    """A worker's set-up for "provider alone, send_many": each item is a list of messages sent at once."""

    def setup() -> Callable[[Any], bool]:
        from smartsvc.config import load_settings
        from smartsvc.delivery.fcm import fcm_provider

        provider = fcm_provider(load_settings(env))
        assert provider is not None and provider.send(message(0, "bench-warm-up")).ok
        return lambda messages: all(r.ok for r in provider.send_many(messages))

    return setup


def delivery_setup(env: dict[str, str], threads: int) -> Callable[[], Callable[[Any], bool]]:
    """A worker's set-up for "end to end": its own database engine and provider, then ``deliver_suggestion``."""

    def setup() -> Callable[[Any], bool]:
        from sqlalchemy import text

        from smartsvc.config import load_settings
        from smartsvc.db import Database
        from smartsvc.delivery.fcm import fcm_provider
        from smartsvc.services.delivery import deliver_suggestion

        settings = load_settings(env)
        database = Database(settings)
        provider = fcm_provider(settings)
        assert provider is not None and provider.send(message(0, "bench-warm-up")).ok
        held = [database.engine.connect() for _ in range(threads)]  # one pooled connection per thread, open
        for connection in held:
            connection.execute(text("SELECT 1"))
            connection.close()

        def handle(item: tuple[Any, int]) -> bool:
            suggestion_id, outbox_id = item
            report = deliver_suggestion(database, suggestion_id, outbox_id)
            return report.delivery_status == "delivered" and report.failed == 0

        return handle

    return setup


def batch_setup(env: dict[str, str], threads: int) -> Callable[[], Callable[[Any], bool]]:
    """A worker's set-up for "end to end, batched": what the ``push_batch`` task runs, one batch per item."""

    def setup() -> Callable[[Any], bool]:
        from smartsvc.config import load_settings
        from smartsvc.db import Database
        from smartsvc.delivery.fcm import fcm_provider
        from smartsvc.services.delivery_batch import deliver_suggestions
        from workers.celery_app import freeze_startup_objects

        settings = load_settings(env)
        database = Database(settings)
        provider = fcm_provider(settings)
        assert provider is not None and provider.send(message(0, "bench-warm-up")).ok
        assert all(r.ok for r in provider.send_many([message(i, "bench-warm-up") for i in range(16)]))
        freeze_startup_objects()  # as a Celery worker process does once it has started (workers/celery_app.py)

        def handle(batch: list[tuple[Any, int]]) -> bool:
            reports = deliver_suggestions(database, batch)
            return all(r.delivery_status == "delivered" and r.failed == 0 for r in reports.values()) \
                and len(reports) == len(batch)

        return handle

    return setup


