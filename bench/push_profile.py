"""Benchmark 6's in-process profile: where a batch's time goes (stages, SQL, packages) and what one send
costs in the provider's code and in the HTTP client."""

from __future__ import annotations

import cProfile
import json
import pstats
import time
from pathlib import Path
from typing import Any, Callable

from bench.common import summarize
from bench.push_fanout import message
from bench.push_servers import PROJECT, bearer_of

# --------------------------------------------------------------------------- where the time goes


_PACKAGES = (("http client (httpx, httpcore, h11)", ("/httpx/", "/httpcore/", "/h11/")),
             ("ORM (sqlalchemy)", ("/sqlalchemy/",)), ("database driver (psycopg)", ("/psycopg",)),
             ("oauth (google-auth)", ("/google/",)), ("json", ("/json/",)),
             ("smartsvc", ("/smartsvc/",)), ("sockets and other builtins", ("~",)))


def where_time_goes(database: Any, burst: list[tuple[Any, int]], batch_size: int) -> dict[str, Any]:
    """One worker, one thread, batches of ``batch_size`` as the task runs them: the three stages of a batch
    timed apart and the SQL statements counted (first half), then a profile grouped by package (second half)."""
    from smartsvc.services import delivery_batch as service

    half = len(burst) // 2
    stages = {name: [] for name in ("_claim", "send_claims", "_finish", "_finish_and_settle")}
    originals = {name: getattr(service, name) for name in stages}

    def timing(name: str) -> Callable[..., Any]:
        original = originals[name]

        def timed_stage(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                stages[name].append(time.perf_counter() - t)

        return timed_stage

    from collections import Counter

    from sqlalchemy import event

    statements: Counter[str] = Counter()

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements[" ".join(statement.split())[:70]] += 1

    def batches(items: list[tuple[Any, int]]) -> list[list[tuple[Any, int]]]:
        return [items[lo:lo + batch_size] for lo in range(0, len(items), batch_size)]

    for name in stages:
        setattr(service, name, timing(name))
    event.listen(database.engine, "before_cursor_execute", count)
    try:
        t = time.perf_counter()
        for batch in batches(burst[:half]):
            service.deliver_suggestions(database, batch)
        wall = time.perf_counter() - t
    finally:
        event.remove(database.engine, "before_cursor_execute", count)
        for name, original in originals.items():
            setattr(service, name, original)
    profile = cProfile.Profile()
    profile.enable()
    for batch in batches(burst[half:]):
        service.deliver_suggestions(database, batch)
    profile.disable()
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    total = sum(tt for (_, _, tt, _, _) in stats.values())
    by_package: dict[str, float] = {name: 0.0 for name, _ in _PACKAGES}
    by_package["other python"] = 0.0
    for (filename, _, _), (_, _, tt, _, _) in stats.items():
        label = next((name for name, marks in _PACKAGES if any(m in filename for m in marks)), "other python")
        by_package[label] += tt
    hottest = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:12]
    n = max(len(burst) - half, 1)
    return {
        "suggestions": half, "batch_size": batch_size, "deliveries_per_s": half / wall if wall else None,
        # Per batch: the claim transaction, the sends, and the finish-and-settle transaction split into
        # recording the tries ("finish") and the rest of it (locks, statuses, retries, outbox, commit: "settle").
        "stages_ms": {"claim": summarize(stages["_claim"]), "send": summarize(stages["send_claims"]),
                      "finish": summarize(stages["_finish"]),
                      "settle": summarize([whole - part for whole, part in
                                           zip(stages["_finish_and_settle"], stages["_finish"])])},
        # SQL sent per delivery (one suggestion), BEGIN/COMMIT and the pool's pings not included.
        "sql_statements_per_delivery": sum(statements.values()) / max(half, 1),
        "sql_statements": {k: v / max(half, 1) for k, v in statements.most_common(15)},
        "profile_share": {k: v / total for k, v in sorted(by_package.items(), key=lambda kv: -kv[1])},
        "profile_us_per_delivery_with_profiler": total / n * 1e6,
        "hottest_functions": [{"function": f"{Path(f).name}:{line}:{func}", "tottime_us_per_delivery": tt / n * 1e6,
                               "calls_per_delivery": nc / n}
                              for (f, line, func), (_, nc, tt, _, _) in hottest],
    }


def client_stages(credentials: Path, url: str, count: int) -> dict[str, Any]:
    """In this process, one thread: what one send costs in the provider's own code and in the HTTP client.

    The same posts with the standard library's ``http.client`` on one kept-alive
    connection show what the HTTP client itself costs.
    """
    import http.client
    from urllib.parse import urlsplit

    import httpx

    from smartsvc.delivery.fcm import build_request, fit_fcm

    messages = [message(i, f"bench-stage-{i}") for i in range(count)]
    t = time.perf_counter()
    bodies = [json.dumps(build_request(fit_fcm(m)), ensure_ascii=False).encode() for m in messages]
    build = (time.perf_counter() - t) / count
    headers = {"Authorization": f"Bearer {bearer_of(credentials)}", "Content-Type": "application/json; charset=UTF-8"}
    endpoint = f"{url}/v1/projects/{PROJECT}/messages:send"
    with httpx.Client() as client:
        client.post(endpoint, content=bodies[0], headers=headers)
        cpu, t = time.process_time(), time.perf_counter()
        ok = sum(client.post(endpoint, content=b, headers=headers).status_code == 200 for b in bodies)
        wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    parts = urlsplit(endpoint)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        def post(body: bytes) -> bool:
            connection.request("POST", parts.path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            return response.status == 200

        post(bodies[0])
        plain_cpu, t = time.process_time(), time.perf_counter()
        plain_ok = sum(post(b) for b in bodies)
        plain_wall, plain_cpu = time.perf_counter() - t, time.process_time() - plain_cpu
    finally:
        connection.close()
    return {"build_and_fit_us": build * 1e6, "httpx_post_us": wall / count * 1e6,
            "httpx_post_cpu_us": cpu / count * 1e6, "httpx_posts_per_s_one_thread": ok / wall,
            "http_client_post_us": plain_wall / count * 1e6, "http_client_post_cpu_us": plain_cpu / count * 1e6,
            "http_client_posts_per_s_one_thread": plain_ok / plain_wall}
