"""Benchmark 4's load: a closed loop of keep-alive HTTP connections posting each user's context batches in order.

User ``u`` is served by connection ``u % connections`` only, so each user's batches go one after the
other in time order, as a phone sends them; the client's own CPU time is measured too.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from typing import Any

from bench.common import summarize


class Load:
    """The closed-loop client: ``connections`` threads, each with its own users and keep-alive connection."""

    def __init__(self, port: int, users: list[dict[str, Any]], bodies: list[list[bytes]], connections: int) -> None:
        self.port, self.users, self.bodies, self.connections = port, users, bodies, connections
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.accepted = 0
        self.sent_events = 0
        self.requests = 0
        self.errors: dict[str, int] = {}
        self.exhausted = 0
        self.total_sent = self.total_accepted = 0  # every run's, the warm-up's included
        self.next_batch: dict[int, int] = {}  # per user: the next batch to send (runs continue where the last stopped)

    def reset(self) -> None:
        """Forget the counts (a warm-up's), keep where each user is."""
        self.latencies, self.accepted, self.sent_events, self.requests, self.errors = [], 0, 0, 0, {}
        self.exhausted = 0

    def _loop(self, slot: int, stop_at: float) -> None:
        mine = [i for i in range(len(self.users)) if i % self.connections == slot]
        next_batch = self.next_batch  # each user belongs to one slot: no two threads touch one entry
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        latencies, accepted, sent, requests, errors = [], 0, 0, 0, {}
        k = 0
        clock = time.perf_counter
        while clock() < stop_at and mine:
            i = mine[k % len(mine)]
            k += 1
            user = self.users[i]
            road_bodies = self.bodies[user["road"]]
            next_batch.setdefault(i, 0)
            if next_batch[i] >= len(road_bodies):
                self.exhausted += 1
                break
            body = road_bodies[next_batch[i]]
            headers = {"Authorization": f"Bearer {user['token']}", "Content-Type": "application/json"}
            t = clock()
            try:
                conn.request("POST", "/v1/me/context", body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                continue
            latencies.append(clock() - t)
            requests += 1
            if response.status == 202:
                next_batch[i] += 1
                accepted += json.loads(payload)["accepted"]
                sent += body.count(b'"type"')
            else:
                errors[str(response.status)] = errors.get(str(response.status), 0) + 1
        conn.close()
        with self.lock:
            self.latencies.extend(latencies)
            self.accepted += accepted
            self.sent_events += sent
            self.total_accepted += accepted
            self.total_sent += sent
            self.requests += requests
            for key, n in errors.items():
                self.errors[key] = self.errors.get(key, 0) + n

    def run(self, duration_s: float) -> dict[str, Any]:
        self.reset()
        threads = []
        cpu0, t0 = time.process_time(), time.perf_counter()
        stop_at = t0 + duration_s
        for slot in range(self.connections):
            thread = threading.Thread(target=self._loop, args=(slot, stop_at), daemon=True)
            threads.append(thread)
            thread.start()
        for thread in threads:
            thread.join()
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        lat = summarize(self.latencies)
        return {"wall_s": round(wall, 2), "requests": self.requests, "events_sent": self.sent_events,
                "events_accepted": self.accepted, "events_per_s": self.accepted / wall if wall else 0.0,
                "requests_per_s": self.requests / wall if wall else 0.0, "latency": lat,
                "errors": self.errors, "client_cpu_s": round(cpu, 2),
                "client_cpu_share_of_one_core": round(cpu / wall, 3) if wall else None,
                "client_cpu_ms_per_request": round(cpu / self.requests * 1000, 3) if self.requests else None,
                "users_out_of_batches": self.exhausted}
