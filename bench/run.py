"""Run the benchmarks: ``python -m bench [--smoke] [--only search,import] [--out DIR]``.

Each benchmark is a module registered in :data:`BENCHMARKS` (see
:mod:`bench.common` for what a module provides). The runner starts shared
references once (PostgreSQL+PostGIS on first use), runs the chosen
benchmarks in order, prints their tables and writes
``<out>/<name>.json`` (``<name>-smoke.json`` for ``--smoke``) with the
machine facts, parameters, results (medians, p99), ratios and targets.

``--smoke`` runs the benchmarks in parallel lanes (``--lanes``, 2 by default;
see :mod:`bench.lanes`), the longest first, each in a forked child whose
output is printed whole when it ends. A full run goes one benchmark at a
time, so that nothing disturbs a measurement.

Adding a benchmark = a ``bench/bench_<name>.py``
with ``NAME``, ``TITLE``, ``run(ctx)`` and ``tables(result)``, plus one line
in :data:`BENCHMARKS`. Options meant for one benchmark go into
``ctx.options`` (see ``--sizes``, ``--queries``, ``--import-features``).
"""

from __future__ import annotations

import argparse
import importlib
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.common import RESULTS_DIR, Context, ensure_debian_tools, machine_info, write_json
from bench.lanes import run_lanes

# name → module. Order is the run order.
BENCHMARKS: dict[str, str] = {
    "search": "bench.bench_search",  # 1. spot search core, in-process
    "http": "bench.bench_http",      # 2. spot search over HTTP against the framework ceiling
    "geofences": "bench.bench_geofences",  # 3. geofence point evaluations in-process (PostGIS ST_Contains beside)
    "context": "bench.bench_context",  # 4. context ingest end to end: API + workers + beat, PostgreSQL+Redis and embedded
    "import": "bench.bench_import",  # 5. import a 1M-feature GeoJSON
    "push": "bench.bench_push",  # 6. push fan-out through the FCM provider to a loopback FCM server
    "webhooks": "bench.bench_webhooks",  # 7. signed webhooks to a loopback receiver, with a dead endpoint beside
}

# Smoke seconds of each benchmark in two lanes on 2 cores (measured 2026-11-27): only the order the lanes
# start them in (longest first, so that no long one is left to run alone at the end).
SMOKE_SECONDS = {"context": 38, "http": 34, "webhooks": 24, "import": 11, "push": 8, "search": 5, "geofences": 3}

# Programs the references run, and the Debian package that has each (installed by `make bench-sysdeps`).
TOOLS = {"ogr2ogr": "gdal-bin", "wrk": "wrk"}


def _sizes(text: str) -> list[int]:
    return [int(float(x)) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Run the smartsvc benchmarks.")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: every benchmark in well under a minute")
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for the JSON results")
    parser.add_argument("--sizes", type=_sizes, help="search: layer sizes, e.g. 10000,100000,1000000")
    parser.add_argument("--queries", type=int, help="search: timed queries per size and vehicle")
    parser.add_argument("--import-features", type=int, help="import: features in the generated file")
    parser.add_argument("--http-spots", type=lambda x: int(float(x)), help="http: spots in the served layer")
    parser.add_argument("--http-duration", type=float, help="http: seconds per wrk run")
    parser.add_argument("--no-postgis", action="store_true", help="search, http: skip the PostGIS reference")
    parser.add_argument("--no-install", action="store_true",
                        help="do not run `make bench-sysdeps` when ogr2ogr or PostgreSQL is missing")
    parser.add_argument("--lanes", type=int, default=2,
                        help="--smoke only: benchmarks run at once, each in a child process (1: one after another)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(width=160)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        console.print(f"[red]unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}[/]")
        return 2
    if not args.no_install:
        ensure_debian_tools(console, TOOLS)
    machine = machine_info()
    console.print(f"machine: {machine.get('cpu_model')}, {machine.get('cores')} cores, "
                  f"{machine.get('memory_gib')} GiB; {'smoke' if args.smoke else 'full'} run of {', '.join(names)}")
    started = time.perf_counter()
    if args.smoke and args.lanes > 1 and len(names) > 1:
        def child(name: str, postgres_port: int) -> int:
            lane_console = Console(width=160, force_terminal=console.is_terminal or None)
            return 1 if run_in_order(lane_console, [name], args, machine, postgres_port) else 0

        longest_first = sorted(names, key=lambda name: -SMOKE_SECONDS.get(name, 0))
        failed = run_lanes(console, [BENCHMARKS[n] for n in names], longest_first, args.lanes, child)
    else:
        failed = run_in_order(console, names, args, machine)
    console.print(f"total {time.perf_counter() - started:.0f} s" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def run_in_order(console: Console, names: list[str], args: argparse.Namespace, machine: dict[str, Any],
                 postgres_port: int | None = None) -> list[str]:
    """Run ``names`` one after another in this process; the names of those that failed.

    ``postgres_port``: the run's PostgreSQL, started by another process (a lane's runner).
    """
    options = {"sizes": args.sizes, "queries": args.queries, "import_features": args.import_features,
               "http_spots": args.http_spots, "http_duration": args.http_duration, "no_postgis": args.no_postgis}
    ctx = Context(smoke=args.smoke, out_dir=args.out, console=console, options=options,
                  postgres_port=postgres_port)
    failed = []
    try:
        for name in names:
            module = importlib.import_module(BENCHMARKS[name])
            console.rule(module.TITLE)
            t0 = time.perf_counter()
            began = datetime.now(timezone.utc)
            try:
                result: dict[str, Any] = module.run(ctx)
            except Exception:
                console.print(f"[red]{name} failed:[/]\n{traceback.format_exc()}")
                failed.append(name)
                continue
            record = {
                "benchmark": name,
                "title": module.TITLE,
                "smoke": args.smoke,
                "started_at": began.isoformat(timespec="seconds"),
                "duration_s": round(time.perf_counter() - t0, 2),
                "machine": machine,
                **result,
            }
            path = args.out / (f"{name}-smoke.json" if args.smoke else f"{name}.json")
            write_json(path, record)
            for table in module.tables(record):
                console.print(table)
            console.print(f"wrote {path} ({record['duration_s']:.0f} s)")
    finally:
        ctx.close()
    return failed


if __name__ == "__main__":
    raise SystemExit(main())
