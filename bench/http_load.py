"""Benchmark 2's load: every served worker warmed, then alternating wrk rounds and their medians."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import Context, ratio
from bench.http_servers import Server, get, run_wrk

# --------------------------------------------------------------------------- servers


def warm_workers(ctx: Context, server: Server, paths: list[str], token: str, workers: int, waves: int,
                 timeout: float = 1800) -> dict[str, Any]:
    """Waves of concurrent searches over fresh connections, so that every worker answers some; the index builds.

    ``smartsvc api`` builds the index once in the gunicorn master before forking (logged with the
    master's pid) and the workers inherit it: no worker should build. Were it not preloaded, a worker's
    first search would build it and the wave would wait for that, so the figures stay honest either way.
    """
    t0 = time.perf_counter()
    wave = 4 * workers
    sent = 0
    with ThreadPoolExecutor(wave) as pool:
        for _ in range(waves):
            batch = [paths[(sent + i) % len(paths)] for i in range(wave)]
            sent += wave
            for status, body in pool.map(lambda p: get(server.base, p, token, timeout=timeout), batch):
                if status != 200:
                    raise RuntimeError(f"{server.name}: warm-up search answered {status}: {body[:500]!r}")
    wall = time.perf_counter() - t0
    builds = server.index_builds()
    master = server.proc.pid if server.proc is not None else None
    seconds = ", ".join(f"{b.get('build_s') or 0:.1f}" for b in builds)
    in_master = [b for b in builds if b.get("pid") == master]
    ctx.log(f"{server.name}: {len(builds)} index build(s) ({len(in_master)} in the master) in {seconds} s "
            f"(warm-up {wall:.1f} s, {sent} searches)")
    return {"wall_s": round(wall, 2), "requests": sent, "built_in_master": bool(in_master),
            "worker_builds": len(builds) - len(in_master), "worker_boots": server.worker_boots(),
            "builds": [{"pid": b.get("pid"), "build_s": b.get("build_s"), "spots": b.get("spots"),
                        "in_master": b.get("pid") == master} for b in builds]}


# --------------------------------------------------------------------------- wrk


def _median_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("rps", "p50_ms", "p75_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms", "bytes_per_response")
    out: dict[str, Any] = {k: float(np.median([r[k] for r in runs])) for k in keys}
    out["p99_ms_worst"] = max(r["p99_ms"] for r in runs)
    out["requests"] = int(sum(r["requests"] for r in runs))
    out["errors"] = {k: int(sum(r["errors"][k] for r in runs)) for k in runs[0]["errors"]}
    out["runs"] = runs
    return out


def load_rounds(ctx: Context, servers: dict[str, tuple[Server, Path, str | None]], levels: dict[str, int],
                cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``rounds`` × every concurrency level × every server, alternating order; medians per server and level."""
    if cfg["warmup_s"] > 0:
        for name, (server, paths_file, token) in servers.items():
            run_wrk(server, paths_file, token, max(levels.values()), cfg["warmup_s"], cfg["wrk_threads"])
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {lv: {name: [] for name in servers} for lv in levels}
    for r in range(cfg["rounds"]):
        for level, connections in levels.items():
            order = list(servers) if r % 2 == 0 else list(reversed(servers))
            for name in order:
                server, paths_file, token = servers[name]
                result = run_wrk(server, paths_file, token, connections, cfg["duration_s"], cfg["wrk_threads"])
                runs[level][name].append(result)
                ctx.log(f"round {r + 1} {level} (c={connections}) {name}: {result['rps']:.0f} req/s, "
                        f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms"
                        + (f", errors {result['errors']}" if any(result["errors"].values()) else ""))
    out: dict[str, dict[str, Any]] = {}
    for level, connections in levels.items():
        out[level] = {"connections": connections, **{name: _median_runs(rs) for name, rs in runs[level].items()}}
    return out


def paired_ratio(level: dict[str, Any], ours: str, reference: str = "ceiling") -> float | None:
    """Median over rounds of ours/ceiling requests/s, each round's pair measured back to back."""
    pairs = [ratio(a["rps"], b["rps"]) for a, b in zip(level[ours]["runs"], level[reference]["runs"])]
    pairs = [p for p in pairs if p is not None]
    return float(np.median(pairs)) if pairs else None
