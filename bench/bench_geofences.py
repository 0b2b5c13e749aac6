"""Benchmark 3 — geofences: point evaluations per second against 100,000 polygons, in-process.

``python -m bench.bench_geofences [--smoke]`` runs it alone (it also has the
``NAME`` / ``TITLE`` / ``run(ctx)`` / ``tables(result)`` of every benchmark
module, so :mod:`bench.run` can register it). It prints a table and writes
``bench/results/geofences.json`` (``geofences-smoke.json`` for ``--smoke``).

The fences: a deterministic synthetic city
(:func:`bench.geofence_city.synthetic_fences`), 100 fences per km² around
Berlin (100k → 32 × 32 km), mixed sizes — shops (15–60 m), sites and parks
(80–300 m, a third with a hole), two-part sites, and districts (0.5–2.5 km,
hundreds of vertices, some with holes) overlapping everything — with
hysteresis 10–50 m, so every query asks a 50 m margin.
Query points: uniform over the city, near a fence's boundary, and inside a
fence.

Measured, on the same fences and points, in the same run:

- **ours, one point** — ``GeofenceIndex.evaluate`` (inside + signed
  distance to the boundary of every fence within 50 m) and ``containing``;
  p50/p99 per call and evaluations per second back to back;
- **ours, batches of 100** — ``evaluate_many`` (what an ingest worker does
  with a batch of location events);
- **state machine** — ``step`` per fix for simulated walkers (evaluation +
  schedules + hysteresis + events);
- **STRtree alternative** — shapely STRtree on the polygons' boxes, prepared
  ``contains_xy`` and the distance to every segment of each candidate: the
  other design the brief asked to measure;
- **naive** — ``contains_xy`` over all polygons at once (no index);
- **PostGIS** — the same polygons in a table (COPY) with GiST indexes, from
  Python with psycopg 3 (prepared statements, one connection):
  ``ST_Contains(geom, point)`` for ``containing``, and for ``evaluate``
  ``ST_DWithin(geog, point, 50)`` returning ``ST_Intersects`` and the
  geodesic distance to the boundary; latency from Python and the server's
  own execution time (``EXPLAIN ANALYZE``).

The references live in :mod:`bench.geofence_refs`.

Ratios compare medians measured here; the machine (cores, memory, load
average at start and end, the cost of one small NumPy operation) is
recorded, because absolute times on a shared machine drift.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from rich.console import Console
from rich.table import Table

from bench.common import (
    RESULTS_DIR,
    Context,
    ensure_debian_tools,
    machine_info,
    ratio,
    rss_bytes,
    summarize,
    timed,
    write_json,
)
from bench.geofence_city import DENSITY_PER_KM2, KINDS, MARGIN_M, query_points, synthetic_fences, walkers
from bench.geofence_refs import naive, postgis, strtree, throughput
from geodata.geofences import Fix, GeofenceIndex, step

NAME = "geofences"
TITLE = "Benchmark 3 — geofences, point evaluation in-process"

BATCH = 100
TARGET_EVALS_PER_S = 20_000

FULL = {"fences": 100_000, "queries": 20_000, "batch_points": 20_000, "state_walkers": 500, "state_fixes": 40,
        "strtree_queries": 2_000, "naive_queries": 20, "postgis_queries": 3_000, "explain_queries": 100}
SMOKE = {"fences": 3_000, "queries": 500, "batch_points": 500, "state_walkers": 20, "state_fixes": 20,
         "strtree_queries": 200, "naive_queries": 5, "postgis_queries": 200, "explain_queries": 10}


# --------------------------------------------------------------------------- measuring


def _calibration() -> dict[str, float]:
    """The cost of one small NumPy operation now: how loaded the machine is, in one number."""
    a = np.arange(100.0)
    best = math.inf
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(2000):
            a + a
        best = min(best, (time.perf_counter() - t) / 2000)
    return {"numpy_small_op_us": best * 1e6, "load_average_1m": os.getloadavg()[0]}


def _ours(index: GeofenceIndex, points: np.ndarray, cfg: dict[str, Any]) -> dict[str, Any]:
    lats, lons = points[:, 0].tolist(), points[:, 1].tolist()
    args = [(la, lo, MARGIN_M) for la, lo in zip(lats, lons)]
    timed(index.evaluate, args[:200])  # warm up: caches, branch predictors, lazily built GEOS indexes
    cpu = time.process_time()
    times, results = timed(index.evaluate, args)
    cpu = time.process_time() - cpu
    # Per CPU-second of this process: what the work costs when other processes take turns on the cores.
    out: dict[str, Any] = {"evaluate": {**summarize(times), "evals_per_s": throughput(times),
                                        "evals_per_cpu_s": len(times) / cpu if cpu > 0 else None}}
    out["fences_per_point_mean"] = float(np.mean([len(r.positions) for r in results]))
    out["inside_per_point_mean"] = float(np.mean([int(r.inside.sum()) for r in results]))
    ctimes, contained = timed(index.containing, [(la, lo) for la, lo in zip(lats, lons)])
    out["containing"] = {**summarize(ctimes), "evals_per_s": throughput(ctimes)}
    n = min(cfg["batch_points"], len(points))
    batches = [(points[lo:lo + BATCH, 0], points[lo:lo + BATCH, 1], MARGIN_M) for lo in range(0, n, BATCH)]
    timed(index.evaluate_many, batches[:3])
    cpu = time.process_time()
    btimes, bres = timed(index.evaluate_many, batches)
    cpu = time.process_time() - cpu
    per_point = [t / len(b[0]) for t, b in zip(btimes, batches)]
    out["evaluate_many"] = {"batch_size": BATCH, **summarize(per_point), "evals_per_s": n / float(np.sum(btimes)),
                            "evals_per_cpu_s": n / cpu if cpu > 0 else None, "batch": summarize(btimes)}
    same = True
    for k, b in enumerate(bres[:10]):
        for i, r in enumerate(results[k * BATCH:(k + 1) * BATCH]):
            e = b.for_point(i)
            same &= sorted(zip(e.positions.tolist(), e.inside.tolist())) == sorted(
                zip(r.positions.tolist(), r.inside.tolist()))
    out["evaluate_many_same_as_evaluate"] = bool(same)
    out["_results"] = results
    out["_contained"] = contained
    return out


def _state_machine(index: GeofenceIndex, walks: list[list[Fix]]) -> dict[str, Any]:
    times = []
    counts = {"geofence.entered": 0, "geofence.exited": 0, "geofence.dwelled": 0}
    clock = time.perf_counter
    for walk in walks:
        state = None
        for f in walk:
            t = clock()
            state, events = step(index, state, f)
            times.append(clock() - t)
            for e in events:
                counts[e.type] += 1
    return {"step": {**summarize(times), "fixes_per_s": throughput(times)}, "events": counts,
            "fixes": len(times)}



def run(ctx: Context) -> dict[str, Any]:
    """Measure everything (see the module docstring); a JSON-able dict with params, results, ratios, targets."""
    cfg = dict(SMOKE if ctx.smoke else FULL)
    for key in ("fences", "queries"):
        if ctx.options.get(key):
            cfg[key] = int(ctx.options[key])
    with_postgis = not ctx.options.get("no_postgis", False)
    load: dict[str, Any] = {"start": _calibration()}
    results: dict[str, Any] = {}

    t = time.perf_counter()
    fences, side = synthetic_fences(cfg["fences"])
    results["generate_s"] = time.perf_counter() - t
    geoms = np.array([f.geometry for f in fences], dtype=object)
    results["vertices_total"] = int(shapely.get_num_coordinates(geoms).sum())
    results["with_holes"] = int((shapely.get_num_interior_rings(geoms) > 0).sum())
    results["multipolygons"] = int((shapely.get_type_id(geoms) == 6).sum())
    del geoms
    gc.collect()
    rss0 = rss_bytes()
    t = time.perf_counter()
    index = GeofenceIndex(fences)
    results["index_build_s"] = time.perf_counter() - t
    results["index_rss_mib"] = (rss_bytes() - rss0) / 2**20
    gc.collect()
    gc.freeze()  # the index is long-lived, as in a service: keep it out of the collector's way
    ctx.log(f"geofences: {len(fences):,} generated in {results['generate_s']:.1f} s, "
            f"indexed in {results['index_build_s']:.1f} s (+{results['index_rss_mib']:.0f} MiB)")

    points = query_points(fences, side, cfg["queries"])
    ours = _ours(index, points, cfg)
    evaluated, contained = ours.pop("_results"), ours.pop("_contained")
    results["ours"] = ours
    ctx.log(f"geofences: evaluate p50 {ours['evaluate']['p50_ms'] * 1000:.1f} µs, "
            f"{ours['evaluate']['evals_per_s']:,.0f}/s; batches of {BATCH}: "
            f"{ours['evaluate_many']['evals_per_s']:,.0f}/s")
    results["state_machine"] = _state_machine(index, walkers(side, cfg["state_walkers"], cfg["state_fixes"]))
    results["strtree_alternative"] = strtree(fences, index, points, evaluated, cfg["strtree_queries"])
    results["naive_full_scan"] = naive(fences, points, contained, cfg["naive_queries"])
    if with_postgis:
        results["postgis"] = postgis(ctx, fences, index, points, evaluated, contained, cfg)
        ctx.log(f"geofences: PostGIS evaluate p50 {results['postgis']['evaluate']['p50_ms'] * 1000:.0f} µs, "
                f"contains p50 {results['postgis']['contains']['p50_ms'] * 1000:.0f} µs")
    gc.unfreeze()
    load["end"] = _calibration()

    o = results["ours"]
    ratios: dict[str, Any] = {
        "strtree_p50_over_ours_p50": ratio(results["strtree_alternative"]["evaluate"]["p50_ms"],
                                           o["evaluate"]["p50_ms"]),
        "naive_p50_over_ours_containing_p50": ratio(results["naive_full_scan"]["containing"]["p50_ms"],
                                                    o["containing"]["p50_ms"]),
        "batch_evals_per_s_over_single": ratio(o["evaluate_many"]["evals_per_s"], o["evaluate"]["evals_per_s"]),
    }
    if with_postgis:
        pg = results["postgis"]
        ratios.update({
            "postgis_evaluate_p50_over_ours_p50": ratio(pg["evaluate"]["p50_ms"], o["evaluate"]["p50_ms"]),
            "postgis_evaluate_p99_over_ours_p99": ratio(pg["evaluate"]["p99_ms"], o["evaluate"]["p99_ms"]),
            "ours_evals_per_s_over_postgis_evaluate": ratio(o["evaluate"]["evals_per_s"],
                                                            pg["evaluate"]["evals_per_s"]),
            "ours_batch_evals_per_s_over_postgis_evaluate": ratio(o["evaluate_many"]["evals_per_s"],
                                                                  pg["evaluate"]["evals_per_s"]),
            "postgis_server_evaluate_p50_over_ours_p50": ratio(pg["evaluate"]["server_execution"]["p50_ms"],
                                                               o["evaluate"]["p50_ms"]),
            "postgis_contains_p50_over_ours_containing_p50": ratio(pg["contains"]["p50_ms"], o["containing"]["p50_ms"]),
            "postgis_server_contains_p50_over_ours_containing_p50": ratio(
                pg["contains"]["server_execution"]["p50_ms"], o["containing"]["p50_ms"]),
        })
    targets = {
        "evaluate_evals_per_s": {"target_min": TARGET_EVALS_PER_S, "measured": o["evaluate"]["evals_per_s"],
                                 "met": o["evaluate"]["evals_per_s"] >= TARGET_EVALS_PER_S, "fences": len(fences)},
        "evaluate_many_evals_per_s": {"target_min": TARGET_EVALS_PER_S, "measured": o["evaluate_many"]["evals_per_s"],
                                      "met": o["evaluate_many"]["evals_per_s"] >= TARGET_EVALS_PER_S,
                                      "fences": len(fences)},
    }
    return {
        "params": {**cfg, "margin_m": MARGIN_M, "batch": BATCH, "density_per_km2": DENSITY_PER_KM2,
                   "side_km": side / 1000.0, "kinds": {k: {"share": v[0], "radius_m": [v[1], v[2]]}
                                                       for k, v in KINDS.items()},
                   "reach_m": index.reach_m, "gc": "gc.freeze() after building the index"},
        "load": load,
        "results": results,
        "ratios": ratios,
        "targets": targets,
    }


# --------------------------------------------------------------------------- printing


def _us(s: dict[str, Any] | None) -> str:
    return "—" if not s else f"{s['p50_ms'] * 1000:.1f} / {s['p99_ms'] * 1000:.1f}"


def _rate(s: dict[str, Any] | None, key: str = "evals_per_s") -> str:
    return "—" if not s or s.get(key) is None else f"{s[key]:,.0f}"


def tables(result: dict[str, Any]) -> list[Table]:
    """The tables to print for a result."""
    r = result["results"]
    o = r["ours"]
    pg = r.get("postgis") or {}
    t = Table(title=f"Geofence evaluation, {result['params']['fences']:,} polygons, margin "
                    f"{result['params']['margin_m']:g} m — per call µs (p50 / p99), evaluations/s")
    for col in ("what", "p50 / p99 µs", "evals/s", "evals/CPU-s"):
        t.add_column(col, justify="right" if col != "what" else "left")
    t.add_row("ours evaluate (inside + signed distance)", _us(o["evaluate"]), _rate(o["evaluate"]),
              _rate(o["evaluate"], "evals_per_cpu_s"))
    t.add_row(f"ours evaluate_many (per point, batches of {o['evaluate_many']['batch_size']})",
              _us(o["evaluate_many"]), _rate(o["evaluate_many"]), _rate(o["evaluate_many"], "evals_per_cpu_s"))
    t.add_row("ours containing", _us(o["containing"]), _rate(o["containing"]))
    t.add_row("ours state machine step (per fix)", _us(r["state_machine"]["step"]),
              _rate(r["state_machine"]["step"], "fixes_per_s"))
    t.add_row("STRtree + distance to every segment", _us(r["strtree_alternative"]["evaluate"]),
              _rate(r["strtree_alternative"]["evaluate"]))
    t.add_row("naive contains_xy over all polygons", _us(r["naive_full_scan"]["containing"]),
              _rate(r["naive_full_scan"]["containing"]))
    if pg:
        t.add_row("PostGIS ST_DWithin + ST_Intersects + distance (from Python)", _us(pg["evaluate"]),
                  _rate(pg["evaluate"]))
        t.add_row("  server execution only", _us(pg["evaluate"]["server_execution"]), "—")
        t.add_row("PostGIS ST_Contains (from Python)", _us(pg["contains"]), _rate(pg["contains"]))
        t.add_row("  server execution only", _us(pg["contains"]["server_execution"]), "—")
    rt = Table(title="Ratios, targets and facts")
    rt.add_column("what")
    rt.add_column("value", justify="right")
    for k, v in result["ratios"].items():
        rt.add_row(k, "—" if v is None else f"{v:.2f}")
    for k, v in result["targets"].items():
        rt.add_row(f"target {k} (≥ {v['target_min']:,})", f"{v['measured']:,.0f} {'met' if v['met'] else 'NOT met'}")
    rt.add_row("index build s / RSS MiB", f"{r['index_build_s']:.1f} / {r['index_rss_mib']:.0f}")
    rt.add_row("fences per point within the margin (inside)",
               f"{o['fences_per_point_mean']:.1f} ({o['inside_per_point_mean']:.1f})")
    rt.add_row("STRtree answers = ours", f"{r['strtree_alternative']['agreement_with_ours']:.1%}")
    rt.add_row("naive answers = ours", str(r["naive_full_scan"]["same_results_as_ours"]))
    if pg:
        rt.add_row("PostGIS contains answers = ours", f"{pg['contains']['same_results_as_ours']:.1%}")
        rt.add_row("PostGIS evaluate answers = ours (fences + inside)",
                   f"{pg['evaluate']['same_fences_and_inside_as_ours']:.1%}, distances within "
                   f"{pg['evaluate']['max_boundary_distance_difference_m']:.3f} m")
    sm = r["state_machine"]
    rt.add_row("state machine events", ", ".join(f"{k.split('.')[1]} {v}" for k, v in sm["events"].items())
               + f" over {sm['fixes']:,} fixes")
    ld = result["load"]
    rt.add_row("machine load: small NumPy op µs / load avg (start → end)",
               f"{ld['start']['numpy_small_op_us']:.2f} / {ld['start']['load_average_1m']:.1f} → "
               f"{ld['end']['numpy_small_op_us']:.2f} / {ld['end']['load_average_1m']:.1f}")
    return [t, rt]


# --------------------------------------------------------------------------- standalone


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.bench_geofences [--smoke] [--fences N] [--queries N] [--no-postgis] [--out DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m bench.bench_geofences", description=TITLE)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (well under 30 s)")
    parser.add_argument("--fences", type=int, help=f"number of fences (default {FULL['fences']:,})")
    parser.add_argument("--queries", type=int, help="timed single-point queries")
    parser.add_argument("--no-postgis", action="store_true", help="skip the PostGIS reference")
    parser.add_argument("--no-install", action="store_true", help="do not run `make bench-sysdeps` when "
                                                                  "PostgreSQL is missing")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for the JSON result")
    args = parser.parse_args(argv)
    console = Console(width=160)
    if not args.no_postgis and not args.no_install:
        ensure_debian_tools(console, {})
    ctx = Context(smoke=args.smoke, out_dir=args.out, console=console,
                  options={"fences": args.fences, "queries": args.queries, "no_postgis": args.no_postgis})
    machine = machine_info()
    console.rule(TITLE)
    console.print(f"machine: {machine.get('cpu_model')}, {machine.get('cores')} cores, "
                  f"{machine.get('memory_gib')} GiB; {'smoke' if args.smoke else 'full'} run")
    started = time.perf_counter()
    began = datetime.now(timezone.utc)
    try:
        result = run(ctx)
    finally:
        ctx.close()
    record = {"benchmark": NAME, "title": TITLE, "smoke": args.smoke, "started_at": began.isoformat(timespec="seconds"),
              "duration_s": round(time.perf_counter() - started, 2), "machine": machine, **result}
    path = args.out / (f"{NAME}-smoke.json" if args.smoke else f"{NAME}.json")
    write_json(path, record)
    for table in tables(record):
        console.print(table)
    console.print(f"wrote {path} ({record['duration_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
