"""Where benchmark 2's served CPU goes: ours and the framework ceiling, per thread, per request.

    python -m bench.http_budget [--spots 100000] [--rounds 2] [--duration 6]

Serves one stored SQLite city with ``smartsvc api`` (2 workers, as
benchmark 2) and the ceiling app beside it, warms both, then runs wrk at
c = 8 against each in turn. Per run it prints requests/s and p99, and per
request: the CPU of the whole machine (``/proc/stat``), of wrk, and of each
gunicorn worker thread (``/proc/<pid>/task``), grouped as the main thread
(gunicorn's accept loop) and the others by thread id, biggest first. The
request threads are the busiest; the smaller ones are the journal writer and
the log flusher (BENCHMARKS.md, 2, session 12).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
from pathlib import Path

from bench import http_city, http_servers
from bench.ab_http import CONNECTIONS
from bench.common import cpu_ticks, python

_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def thread_cpu_s(pids: list[int]) -> dict[tuple[int, str], float]:
    """CPU seconds (user + system) of every thread of ``pids``, keyed by (pid, "main" or thread id)."""
    out = {}
    for pid in pids:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
            except FileNotFoundError:  # the thread ended
                continue
            out[(pid, "main" if int(tid) == pid else tid)] = (int(fields[11]) + int(fields[12])) * _TICK_S
    return out


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(server: http_servers.Server, paths_file: Path, token: str, duration_s: float) -> str:
    """One wrk run at c = 8 against ``server``: its report, per request."""
    pids = server.worker_pids()
    threads, machine, wrk = thread_cpu_s(pids), cpu_ticks(), children_cpu_s()
    result = http_servers.run_wrk(server, paths_file, token, CONNECTIONS, duration_s, 2)
    per_request = 1e6 / max(result["requests"], 1)
    lines = [f"{server.name}: {result['rps']:,.0f} req/s, p99 {result['p99_ms']:.1f} ms; per request: "
             f"machine {(cpu_ticks() - machine) * per_request:.0f} µs, "
             f"wrk {(children_cpu_s() - wrk) * per_request:.0f} µs"]
    spent = {key: value - threads.get(key, 0.0) for key, value in thread_cpu_s(pids).items()}
    for (pid, thread), seconds in sorted(spent.items(), key=lambda item: -item[1]):
        if seconds > 0:
            lines.append(f"    worker {pid} thread {thread:>6}: {seconds * per_request:7.1f} µs")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spots", type=int, default=100_000)
    parser.add_argument("--urls", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of wrk per server before the rounds")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="http-budget-"))
    servers: list[http_servers.Server] = []
    try:
        env, driver, paths = http_city.stored_city_for_serving(root / "var", args.spots, "budget city", args.urls)
        ours_paths = root / "paths.txt"
        ours_paths.write_text("\n".join(paths) + "\n")
        port = http_servers.free_port()
        ours = http_servers.Server("ours", http_servers.api_argv(port, 2), env, root / "ours.log", port)
        servers.append(ours)
        ours.start("/v1/health", timeout=1800)
        _, body = http_servers.get(ours.base, paths[0], driver["token"])
        items = root / "items.json"  # the ceiling answers a real answer's items, as in benchmark 2
        items.write_text(json.dumps(json.loads(body)["items"]))
        port = http_servers.free_port()
        ceiling = http_servers.Server("ceiling", [python(), "-m", "bench.ceiling_app", "--port", str(port),
                                                  "--workers", "2", "--items", str(items)],
                                      dict(os.environ), root / "ceiling.log", port)
        servers.append(ceiling)
        ceiling.start("/health")
        ceiling_paths = root / "paths-ceiling.txt"
        ceiling_paths.write_text("\n".join("/items?" + p.split("?", 1)[1] for p in paths) + "\n")
        loads = [(ours, ours_paths), (ceiling, ceiling_paths)]
        for server, paths_file in loads:
            http_servers.run_wrk(server, paths_file, driver["token"], CONNECTIONS, args.warmup, 2)
        for _ in range(args.rounds):
            for server, paths_file in loads:
                print(measure(server, paths_file, driver["token"], args.duration), flush=True)
    finally:
        http_servers.stop_all(servers)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
