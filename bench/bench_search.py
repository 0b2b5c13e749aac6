"""Benchmark 1 — spot search core, in-process (BENCHMARKS.md).

For each layer size (10k, 100k, 1M synthetic spots from :mod:`bench.citygen`):
``SpotIndex`` + ``geodata.search`` at query points on streets, 300 m radius,
a smart fortwo (2.69 m) and a normal car (4.5 m), fit + allowed-now for
60 minutes, top 20 — p50/p99 per query. In the same run, on the same spots:

- **naive NumPy**: no index — the same geodesic segment distance to every
  spot of the layer, then the fit/allowed filters, then a sort (checked to
  give the same top 20 as ours);
- **naive geopy** (small sizes only): ``geopy.distance.geodesic`` per row to
  each vertex, ``geodata.fit.fit`` per row;
- **PostGIS**: the same spots in a table with a ``geography`` column and a
  GiST index (loaded with COPY), queried with ``ST_DWithin`` + the fit
  columns + ``ruleset_id = ANY(allowed)`` + ``ORDER BY geog <-> point LIMIT
  20`` as a prepared statement through psycopg 3 — latency from Python, and
  the server-side execution time from ``EXPLAIN ANALYZE``. PostGIS gets the
  allowed rule lists precomputed for free (a SQL user cannot evaluate
  opening_hours in the query), so the comparison favours it.

The references live in :mod:`bench.search_refs`.

Also a breakdown of our time: grid lookup, distance + radius cut, ranking +
fit + allowed + results, rule evaluation (cold minus warm decision cache) and
serialisation to dicts (``SpotResult.to_dict``, what the HTTP layer does).
"""

from __future__ import annotations

import gc
import time
from datetime import datetime
from typing import Any

import numpy as np
from rich.table import Table

from bench.citygen import VEHICLES, City, query_times
from bench.common import Context, ratio, summarize, timed
from bench.search_refs import LIMIT, RADIUS_M, NaiveScan, PostGISReference, geopy_search
from geodata import SpotIndex, kernels, search
from geodata.model import Spot, Vehicle

NAME = "search"
TITLE = "Benchmark 1 — spot search core, in-process"

DURATION_MIN = 60.0
# A service rounds "now" to the minute: under load most queries share a few distinct times.
WARM_DISTINCT_TIMES = 8

FULL = {"sizes": [10_000, 100_000, 1_000_000], "queries": 2000, "cold_queries": 500, "stage_queries": 500,
        "naive_queries": 30, "geopy_max_size": 10_000, "geopy_queries": 3, "explain_queries": 100}
SMOKE = {"sizes": [2_000, 5_000], "queries": 100, "cold_queries": 50, "stage_queries": 50,
         "naive_queries": 10, "geopy_max_size": 2_000, "geopy_queries": 2, "explain_queries": 20}

TARGET_P50_MS = 0.15
TARGET_SPEEDUP_VS_POSTGIS = 2.0
TARGET_SCALE_RATIO = 2.0


# --------------------------------------------------------------------------- measuring one size


def _series(index: SpotIndex, points: list[tuple[float, float]], times: list[datetime], vehicle: Vehicle
            ) -> tuple[list[float], list[list[Any]]]:
    args = [(index, lat, lon, RADIUS_M, vehicle, at, DURATION_MIN, LIMIT) for (lat, lon), at in zip(points, times)]
    return timed(search, args)


def _stages(index: SpotIndex, points: list[tuple[float, float]], times: list[datetime], vehicle: Vehicle
            ) -> dict[str, Any]:
    """Where a warm search spends its time (public pieces only, so this does not drift from search.py)."""
    clock = time.perf_counter
    cand = getattr(index, "_candidates", None)
    lookup, within, total, arrays, serialize = [], [], [], [], []
    geometry, why, n_cand, n_hits, n_results, n_rulesets = [], [], [], [], [], []
    for (lat, lon), at in zip(points, times):
        if cand is not None:
            t = clock()
            c = cand(lat, lon, RADIUS_M)
            lookup.append(clock() - t)
            n_cand.append(len(c))
        t = clock()
        hits = index.within(lat, lon, RADIUS_M)
        within.append(clock() - t)
        t = clock()
        results = search(index, lat, lon, RADIUS_M, vehicle, at, DURATION_MIN, LIMIT)
        total.append(clock() - t)
        if kernels.enabled():  # the same search on the NumPy array path (what the stages above are part of)
            compiled = kernels.enabled
            kernels.enabled = lambda: False  # type: ignore[assignment]
            try:
                t = clock()
                search(index, lat, lon, RADIUS_M, vehicle, at, DURATION_MIN, LIMIT)
                arrays.append(clock() - t)
            finally:
                kernels.enabled = compiled  # type: ignore[assignment]
        t = clock()
        for r in results:
            r.to_dict()
        serialize.append(clock() - t)
        t = clock()
        for r in results:
            r.geometry
        geometry.append(clock() - t)
        t = clock()
        for r in results:
            r.why
        why.append(clock() - t)
        n_hits.append(len(hits.positions))
        n_results.append(len(results))
        n_rulesets.append(len(np.unique(index.ruleset_id[hits.positions])))
    med = lambda xs: float(np.median(xs) * 1000.0) if xs else None  # noqa: E731
    within_ms, total_ms, lookup_ms = med(within), med(total), med(lookup)
    arrays_ms = med(arrays) if arrays else total_ms
    return {
        "lookup_ms": lookup_ms,
        "distance_and_cut_ms": None if lookup_ms is None else within_ms - lookup_ms,
        "within_ms": within_ms,
        "rank_fit_allowed_results_ms": arrays_ms - within_ms,
        "search_array_path_ms": arrays_ms,
        "search_ms": total_ms,
        "compiled": bool(arrays),
        "serialize_20_dicts_ms": med(serialize),
        "serialize_geometry_ms": med(geometry),
        "serialize_why_ms": med(why),
        "candidates_mean": float(np.mean(n_cand)) if n_cand else None,
        "hits_mean": float(np.mean(n_hits)),
        "results_mean": float(np.mean(n_results)),
        "distinct_rule_lists_in_hits_mean": float(np.mean(n_rulesets)),
        "note": "medians of each stage measured separately on the same queries; lookup, distance_and_cut, "
                "within and rank_fit_allowed_results are stages of the NumPy array path (rank = array path - "
                "within); search_ms is the search as served (compiled with Numba when available); rule "
                "evaluation on a cold decision cache is ours_cold - ours (warm)",
    }


def measure_size(ctx: Context, n: int, cfg: dict[str, Any], with_postgis: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"spots": n}
    city = City(n)
    t = time.perf_counter()
    spots: list[Spot] = city.spots()
    out["generate_s"] = time.perf_counter() - t
    t = time.perf_counter()
    index = SpotIndex(spots, timezones=city.timezones)
    out["index_build_s"] = time.perf_counter() - t
    del spots
    out["side_km"] = city.side_m / 1000.0
    out["distinct_rule_lists"] = len(index.rulesets)
    ctx.log(f"search {n:,}: generated in {out['generate_s']:.1f} s, indexed in {out['index_build_s']:.1f} s")
    ref = PostGISReference(ctx, index) if with_postgis else None
    if ref is not None:
        ctx.log(f"search {n:,}: PostGIS loaded (COPY) in {ref.load_s:.1f} s, GiST + ANALYZE in {ref.index_s:.1f} s")
    gc.collect()
    gc.freeze()  # the layer is long-lived, as in a service: keep it out of the collector's way
    try:
        _measure(ctx, index, city, cfg, ref, out)
    finally:
        if ref is not None:
            ref.close()
        gc.unfreeze()
    del index
    gc.collect()
    return out


def _measure(ctx: Context, index: SpotIndex, city: City, cfg: dict[str, Any], ref: PostGISReference | None,
             out: dict[str, Any]) -> None:
    n = len(index)
    q = cfg["queries"]
    points = city.query_points(q, seed=1)
    warm_times = query_times(q, distinct=WARM_DISTINCT_TIMES)
    cold_points = city.query_points(cfg["cold_queries"], seed=2)
    cold_times = query_times(cfg["cold_queries"], seed=5)
    allowed_by_time: dict[datetime, list[int]] = {}
    if ref is not None:
        out["postgis"] = {"load_copy_s": ref.load_s, "gist_index_and_analyze_s": ref.index_s}
        for at in set(warm_times):
            allowed_by_time[at] = [i for i, rs in enumerate(index.rulesets) if rs.evaluate(at, DURATION_MIN).allowed]

    # Ours and PostGIS query by query, interleaved: a burst of load on a shared machine hits both alike.
    clock = time.perf_counter
    ours: dict[str, Any] = {}
    ours_results: dict[str, list[list[Any]]] = {}
    overlap: list[float] = []
    for name, vehicle in VEHICLES.items():
        params = [ref.params(lat, lon, vehicle, allowed_by_time[at]) for (lat, lon), at in zip(points, warm_times)
                  ] if ref is not None else []
        # Warm up: imports, the decision cache for the warm times, the prepared statement, buffers.
        for i in range(min(50, q)):
            search(index, *points[i], RADIUS_M, vehicle, warm_times[i], DURATION_MIN, LIMIT)
            if ref is not None:
                ref.query(params[i])
        t_ours: list[float] = []
        t_pg: list[float] = []
        results: list[list[Any]] = []
        for i, ((lat, lon), at) in enumerate(zip(points, warm_times)):
            t = clock()
            r = search(index, lat, lon, RADIUS_M, vehicle, at, DURATION_MIN, LIMIT)
            t_ours.append(clock() - t)
            results.append(r)
            if ref is not None:
                t = clock()
                rows = ref.query(params[i])
                t_pg.append(clock() - t)
                a, b = {row[0] for row in rows}, {x.id for x in r}
                overlap.append(len(a & b) / max(len(a | b), 1))
        ours[name] = summarize(t_ours)
        ours[name]["results_mean"] = float(np.mean([len(r) for r in results]))
        ours_results[name] = results
        if ref is not None:
            out["postgis"][name] = summarize(t_pg)
    out["ours"] = ours
    index.decision_cache.clear()
    ctimes, _ = _series(index, cold_points, cold_times, VEHICLES["smart_fortwo"])
    out["ours_cold_cache"] = {"smart_fortwo": summarize(ctimes)}
    sp = cfg["stage_queries"]
    out["stages"] = _stages(index, points[:sp], warm_times[:sp], VEHICLES["smart_fortwo"])
    out["hits_mean"] = out["stages"]["hits_mean"]
    ctx.log(f"search {n:,}: ours p50 {ours['smart_fortwo']['p50_ms']:.3f} ms (smart), "
            f"{ours['normal_car']['p50_ms']:.3f} ms (normal); {out['hits_mean']:.0f} hits per query")

    if ref is not None:
        pg = out["postgis"]
        pg["result_overlap_with_ours"] = float(np.mean(overlap))
        eq = cfg["explain_queries"]
        vehicle = VEHICLES["smart_fortwo"]
        params = [ref.params(lat, lon, vehicle, allowed_by_time[at]) for (lat, lon), at in zip(points[:eq], warm_times)]
        pg["server_execution"] = {"smart_fortwo": summarize([ref.explain_ms(p) / 1000.0 for p in params])}
        plan = ref.plan(params[0])
        pg["plan"] = plan
        pg["plan_uses_gist_knn"] = "Index Scan" in plan and "Sort" not in plan
        pg["query"] = " ".join(ref.sql.split())
        ctx.log(f"search {n:,}: PostGIS p50 {pg['smart_fortwo']['p50_ms']:.3f} ms (smart), "
                f"{pg['normal_car']['p50_ms']:.3f} ms (normal)")

    # Naive NumPy full scan.
    naive = NaiveScan(index)
    nq = cfg["naive_queries"]
    out["naive_numpy"] = {}
    agree = True
    for name, vehicle in VEHICLES.items():
        args = [(lat, lon, RADIUS_M, vehicle, at, DURATION_MIN, LIMIT) for (lat, lon), at in
                zip(points[:nq], warm_times[:nq])]
        naive.search(*args[0])  # warm the allowed cache like ours is warm
        times, results = timed(naive.search, args)
        out["naive_numpy"][name] = summarize(times)
        # Spots at equal distances may come in either order (or either be the 20th): compare the distances.
        for got, o in zip(results, ours_results[name][:nq]):
            agree &= len(got) == len(o) and bool(np.allclose([d for _, d in got], [r.distance_m for r in o],
                                                             rtol=0, atol=1e-6))
    out["naive_numpy"]["same_results_as_ours"] = bool(agree)
    del naive

    if n <= cfg["geopy_max_size"]:
        gq = cfg["geopy_queries"]
        vehicle = VEHICLES["smart_fortwo"]
        args = [(index, lat, lon, RADIUS_M, vehicle, at, DURATION_MIN, LIMIT)
                for (lat, lon), at in zip(points[:gq], warm_times[:gq])]
        times, _ = timed(geopy_search, args)
        out["naive_geopy"] = {"smart_fortwo": summarize(times)}
    else:
        out["naive_geopy"] = None


# --------------------------------------------------------------------------- the benchmark


def run(ctx: Context) -> dict[str, Any]:
    cfg = dict(SMOKE if ctx.smoke else FULL)
    if ctx.options.get("sizes"):
        cfg["sizes"] = list(ctx.options["sizes"])
    if ctx.options.get("queries"):
        cfg["queries"] = int(ctx.options["queries"])
    with_postgis = not ctx.options.get("no_postgis", False)
    sizes: dict[str, Any] = {}
    for n in cfg["sizes"]:
        sizes[str(n)] = measure_size(ctx, n, cfg, with_postgis)
    if with_postgis:
        sizes_pg = next(iter(sizes.values()))["postgis"]
        versions = ctx.postgres().versions()
    else:
        sizes_pg, versions = None, {}
    small, large = sizes[str(min(cfg["sizes"]))], sizes[str(max(cfg["sizes"]))]
    ratios: dict[str, Any] = {}
    for name in VEHICLES:
        r: dict[str, Any] = {}
        ours_l = large["ours"][name]["p50_ms"]
        if with_postgis:
            r["postgis_p50_over_ours_p50"] = ratio(large["postgis"][name]["p50_ms"], ours_l)
            r["postgis_p99_over_ours_p99"] = ratio(large["postgis"][name]["p99_ms"], large["ours"][name]["p99_ms"])
        r["naive_numpy_p50_over_ours_p50"] = ratio(large["naive_numpy"][name]["p50_ms"], ours_l)
        r["ours_p50_largest_over_smallest"] = ratio(ours_l, small["ours"][name]["p50_ms"])
        r["ours_p99_largest_over_smallest"] = ratio(large["ours"][name]["p99_ms"], small["ours"][name]["p99_ms"])
        ratios[name] = r
    ratios["hits_mean_smallest"] = small["hits_mean"]
    ratios["hits_mean_largest"] = large["hits_mean"]
    if small.get("naive_geopy"):
        ratios["geopy_p50_over_ours_p50_smallest"] = ratio(small["naive_geopy"]["smart_fortwo"]["p50_ms"],
                                                           small["ours"]["smart_fortwo"]["p50_ms"])
    worst_p50 = max(large["ours"][v]["p50_ms"] for v in VEHICLES)
    targets: dict[str, Any] = {
        "p50_ms_at_largest": {"target_max": TARGET_P50_MS, "measured": worst_p50, "met": worst_p50 <= TARGET_P50_MS,
                              "size": max(cfg["sizes"])},
        "scale_largest_over_smallest": {
            "target_max": TARGET_SCALE_RATIO,
            "measured": max(ratios[v]["ours_p50_largest_over_smallest"] or 0 for v in VEHICLES),
        },
    }
    targets["scale_largest_over_smallest"]["met"] = targets["scale_largest_over_smallest"]["measured"] <= TARGET_SCALE_RATIO
    if with_postgis:
        speedup = min(ratios[v]["postgis_p50_over_ours_p50"] or 0 for v in VEHICLES)
        targets["speedup_vs_postgis_p50"] = {"target_min": TARGET_SPEEDUP_VS_POSTGIS, "measured": speedup,
                                             "met": speedup >= TARGET_SPEEDUP_VS_POSTGIS}
    return {
        "params": {"radius_m": RADIUS_M, "limit": LIMIT, "duration_min": DURATION_MIN,
                   "vehicles": {k: {"length_m": v.length_m, "width_m": v.width_m, "height_m": v.height_m,
                                    "weight_kg": v.weight_kg} for k, v in VEHICLES.items()},
                   "warm_distinct_times": WARM_DISTINCT_TIMES, "density_per_km2": City(1).density,
                   "gc": "gc.freeze() after building the index", **cfg},
        "versions": versions,
        "results": {"sizes": sizes},
        "ratios": ratios,
        "targets": targets,
        "postgis_reference_note": None if sizes_pg is None else
        "PostGIS gets the allowed rule lists precomputed (ruleset_id = ANY(...)); ours evaluates them.",
    }


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def tables(result: dict[str, Any]) -> list[Table]:
    sizes = result["results"]["sizes"]
    t = Table(title="Search latency per query, ms (p50 / p99)")
    for col in ("spots", "hits", "ours smart", "ours normal", "ours cold smart", "PostGIS smart", "PostGIS normal",
                "PG server exec", "naive NumPy", "naive geopy"):
        t.add_column(col, justify="right")

    def pp(s: dict[str, Any] | None) -> str:
        return "—" if not s else f"{s['p50_ms']:.3f} / {s['p99_ms']:.3f}"

    for n, s in sizes.items():
        pg = s.get("postgis") or {}
        t.add_row(f"{int(n):,}", f"{s['hits_mean']:.0f}", pp(s["ours"]["smart_fortwo"]), pp(s["ours"]["normal_car"]),
                  pp(s["ours_cold_cache"]["smart_fortwo"]), pp(pg.get("smart_fortwo")), pp(pg.get("normal_car")),
                  pp((pg.get("server_execution") or {}).get("smart_fortwo")),
                  pp(s["naive_numpy"]["smart_fortwo"]), pp((s.get("naive_geopy") or {}).get("smart_fortwo")))
    st = Table(title="Where a warm search goes, ms (median per query, smart fortwo)")
    for col in ("spots", "lookup", "distance+cut", "rank+fit+allowed+results", "array path", "search", "to_dict ×20",
                "  geometry", "  why", "candidates", "hits"):
        st.add_column(col, justify="right")
    for n, s in sizes.items():
        g = s["stages"]
        st.add_row(f"{int(n):,}", _f(g["lookup_ms"]), _f(g["distance_and_cut_ms"]),
                   _f(g["rank_fit_allowed_results_ms"]), _f(g.get("search_array_path_ms")), _f(g["search_ms"]),
                   _f(g["serialize_20_dicts_ms"]),
                   _f(g["serialize_geometry_ms"]), _f(g["serialize_why_ms"]), _f(g["candidates_mean"], 0),
                   _f(g["hits_mean"], 0))
    rt = Table(title="Ratios and targets")
    rt.add_column("what")
    rt.add_column("value", justify="right")
    for vehicle in VEHICLES:
        for k, v in result["ratios"][vehicle].items():
            rt.add_row(f"{vehicle}: {k}", _f(v, 2))
    for k, v in result["targets"].items():
        bound = f"≤ {v['target_max']}" if "target_max" in v else f"≥ {v['target_min']}"
        rt.add_row(f"target {k} ({bound})", f"{_f(v['measured'], 3)} {'met' if v['met'] else 'NOT met'}")
    return [t, st, rt]
