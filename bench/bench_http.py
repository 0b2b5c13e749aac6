"""Benchmark 2 — spot search over HTTP (``GET /v1/spots``) against the framework ceiling.

Set-up (timed and reported): the synthetic city of :mod:`bench.citygen`
(seeded; 1,000,000 spots in the full run) is stored as the live ``parking``
layer of a fresh embedded SQLite database under a temporary
``SMARTSVC_VAR_DIR`` (rows built like the importer's, written with
:func:`smartsvc.services.layers.insert_features`); an operator and an app
key, a catalogue model (smart fortwo, 2.69 m), a user owning a product of
it and the user's access token are made through the HTTP API (Flask test
client, in this process).

Then ``smartsvc api --workers N`` (N = cores, exactly as deployed: gunicorn
gthread) runs as a child process with a rate limit no run can reach. Every
worker process is warmed before anything is timed: the first search in a
process builds its in-process index of the layer, and the time each process
took (logged by the service) is the "index build per process" figure.

Load: ``wrk`` with a Lua script (``bench/wrk_rotate.lua``) rotating through
thousands of search URLs (query points on streets, 300 m, 60 min, top 20, at
8 distinct start times like benchmark 1) with the bearer token, fixed
duration, ``--latency``. Connections: ``workers × threads`` (every request
thread of the server busy: throughput) and ``workers`` (one request per
process at a time: latency).

Reference in the same run, on the same machine: the **framework ceiling** —
``bench/ceiling_app.py``, one Flask endpoint returning a 20-item JSON list
(a real answer's items, so the bodies weigh the same) served by the same
gunicorn settings (:func:`smartsvc.cli.processes.gunicorn_options`). Ours and
the ceiling alternate run by run, so machine drift hits both; ratios are
taken within a round and their median reported.

With PostgreSQL+PostGIS (unless ``--no-postgis``): the same city (200,000
spots in the full run: loading a million through ``insert_features`` would
add minutes, and the search cost does not depend on the layer size) in a
fresh migrated PostgreSQL database, served twice side by side,
``SMARTSVC_SPOT_SEARCH=postgis`` and ``=index``, alternating with the
ceiling; the two are checked to give the same spots.

Also, in this process: where the time of one request goes (authentication,
product lookup, index staleness check, search, serialisation, response
schema, JSON encoding, and the whole request through the Flask test client),
plus a cProfile summary of whole requests.

Where the parts are: the city, the driver and the search URLs in :mod:`bench.http_city`; the warm-up
and the wrk rounds in :mod:`bench.http_load`; the in-process breakdown in :mod:`bench.http_breakdown`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from rich.table import Table

from bench.citygen import City
from bench.common import Context, python, ratio
from bench.http_breakdown import breakdown_part
from bench.http_city import (DURATION_MIN, LIMIT, RADIUS_M, WARM_DISTINCT_TIMES, make_driver, search_paths,
                             store_city)
from bench.http_load import load_rounds, paired_ratio, warm_workers
from bench.http_servers import (Server, api_argv, free_port, get, in_process_app, service_env, stop_all,
                                warm_requests)
from smartsvc.cli.processes import gunicorn_options

NAME = "http"
TITLE = "Benchmark 2 — spot search over HTTP"

# breakdown_spots: the layer of the in-process breakdown (its own database; 0 = the served one). The
# search costs the same at 100k and 1M spots (benchmark 1), and a second 1M index build here would cost
# minutes of the 15-minute budget.
# warmup_s: one wrk run per server before the rounds, long enough to pass over every URL once (4,000 at
# ~700 req/s): with 3 s, the first round still met URLs for the first time (ours rose 631 -> 988 -> 1,146
# req/s over the three rounds).
FULL = {"spots": 1_000_000, "postgis_spots": 100_000, "breakdown_spots": 100_000, "urls": 4000, "duration_s": 5,
        "rounds": 3, "postgis_rounds": 1, "warmup_s": 8, "warm_waves": 12, "postgis_warm_requests": 50,
        "profile_requests": 400, "wrk_threads": 2, "light_level": True, "graceful_stop": True}
# graceful_stop False: the smoke run kills the servers once measured (see Server.begin_stop).
SMOKE = {"spots": 3000, "postgis_spots": 3000, "breakdown_spots": 0, "urls": 200, "duration_s": 1, "rounds": 1,
         "postgis_rounds": 1, "warmup_s": 0, "warm_waves": 3, "postgis_warm_requests": 16, "profile_requests": 10,
         "wrk_threads": 2, "light_level": False, "graceful_stop": False}

TARGET_RPS_RATIO = 0.60
TARGET_P99_MS = 20.0


# --------------------------------------------------------------------------- the benchmark


def _check_answer(server: Server, path: str, token: str) -> tuple[list[Any], int]:
    status, body = get(server.base, path, token)
    if status != 200:
        raise RuntimeError(f"{server.name}: search answered {status}: {body[:500]!r}")
    items = json.loads(body)["items"]
    return items, len(body)


def _sqlite_part(ctx: Context, cfg: dict[str, Any], workers: int, root: Path,
                 ceiling_items: Path) -> tuple[dict[str, Any], Server | None]:
    """Store the city in SQLite, serve it, warm it, start the ceiling; load both. Returns results and the ceiling."""
    city = City(cfg["spots"])
    var = root / "var-sqlite"
    env = service_env(var)
    app = in_process_app(env)
    stored = store_city(app.extensions["smartsvc"].database, city, "bench city (sqlite)")
    ctx.log(f"sqlite: {stored['spots']:,} spots generated in {stored['generate_s']:.1f} s, "
            f"stored in {stored['store_s']:.1f} s")
    driver = make_driver(app)
    paths = search_paths(city, driver["product_id"], cfg["urls"])
    paths_file = root / "paths-sqlite.txt"
    paths_file.write_text("\n".join(paths) + "\n")

    port = free_port()
    ours = Server("ours (SQLite, index)", api_argv(port, workers), env, root / "api-sqlite.log", port)
    port = free_port()
    ceiling = Server("ceiling", [python(), "-m", "bench.ceiling_app", "--port", str(port), "--workers",
                                 str(workers), "--items", str(ceiling_items)], dict(os.environ),
                     root / "ceiling.log", port)
    try:
        ours.launch()
        ceiling.launch()  # both start at once; the ceiling reads its items at its first request
        ceiling.wait_ready("/health")
        # The master builds the index before it forks and listens: minutes at a million spots.
        start_s = ours.wait_ready("/v1/health", timeout=1800)
        ctx.log(f"sqlite: server up in {start_s:.1f} s (the index built in the master first)")
        warm = warm_workers(ctx, ours, paths, driver["token"], workers, cfg["warm_waves"])
        items, body_bytes = _check_answer(ours, paths[0], driver["token"])
        ceiling_items.write_text(json.dumps(items))
        counts = [len(_check_answer(ours, p, driver["token"])[0]) for p in paths[:20]]
        ceiling_file = root / "paths-ceiling.txt"
        ceiling_file.write_text("\n".join("/items?" + p.split("?", 1)[1] for p in paths) + "\n")
        status, ceiling_body = get(ceiling.base, "/items", None)
        boots_before = ours.worker_boots()
        builds_before = len(ours.index_builds())
        threads = gunicorn_options("127.0.0.1", 0, workers)["threads"]
        levels = {"saturated": workers * threads, **({"light": workers} if cfg["light_level"] else {})}
        loads = load_rounds(ctx, {"ceiling": (ceiling, ceiling_file, driver["token"]),
                                  "ours": (ours, paths_file, driver["token"])}, levels, cfg)
        recycled = {"worker_restarts": ours.worker_boots() - boots_before,
                    "index_rebuilds": len(ours.index_builds()) - builds_before}
    except BaseException:
        stop_all([ours, ceiling])
        raise
    # Ours shuts down while the in-process breakdown runs: that measures this thread's CPU time only.
    ours.begin_stop(cfg["graceful_stop"])
    try:
        app.extensions["smartsvc"].database.engine.dispose()
        detail = breakdown_part(ctx, cfg, root, app, driver, paths)
    finally:
        ours.wait_stopped()
    return {
        "stored": stored,
        "server_start_s": round(start_s, 2),
        "warm_up": warm,
        "response_bytes": body_bytes,
        "ceiling_response_bytes": len(ceiling_body),
        "items_per_answer_first_20": counts,
        "load": loads,
        "during_load": recycled,
        "in_process": detail,
    }, ceiling


def _compare_answers(a: Server, b: Server, paths: list[str], token: str) -> dict[str, Any]:
    """Do two servers give the same spots? Same ids in the same order, or the same set; distance gaps."""
    same_order = same_set = 0
    gap = 0.0
    for path in paths:
        x, y = _check_answer(a, path, token)[0], _check_answer(b, path, token)[0]
        same_order += [i["id"] for i in x] == [i["id"] for i in y]
        same_set += {i["id"] for i in x} == {i["id"] for i in y}
        dy = {i["id"]: i["distance_m"] for i in y}
        gap = max([gap, *(abs(i["distance_m"] - dy[i["id"]]) for i in x if i["id"] in dy)])
    return {"queries": len(paths), "same_order": same_order, "same_set": same_set, "max_distance_gap_m": gap}


def _postgis_part(ctx: Context, cfg: dict[str, Any], workers: int, root: Path,
                  ceiling: Server) -> dict[str, Any]:
    """The same city in PostgreSQL+PostGIS; SMARTSVC_SPOT_SEARCH=postgis and =index side by side with the ceiling."""
    pg = ctx.postgres()
    name = f"bench_http_{os.getpid()}"
    pg.create_database(name)
    url = pg.server.url(name)
    city = City(cfg["postgis_spots"])
    var = root / "var-postgres"
    env = service_env(var, database_url=url)
    app = in_process_app(env)
    stored = store_city(app.extensions["smartsvc"].database, city, "bench city (postgres)")
    ctx.log(f"postgres: {stored['spots']:,} spots stored in {stored['store_s']:.1f} s")
    import psycopg

    with psycopg.connect(pg.server.dsn(name), autocommit=True) as conn:
        conn.execute("ANALYZE layer_features")
    driver = make_driver(app)
    app.extensions["smartsvc"].database.engine.dispose()
    paths = search_paths(city, driver["product_id"], cfg["urls"])
    paths_file = root / "paths-postgres.txt"
    paths_file.write_text("\n".join(paths) + "\n")
    ceiling_file = root / "paths-ceiling.txt"
    servers: dict[str, Server] = {}
    out: dict[str, Any] = {"stored": stored}
    try:
        for mode in ("postgis", "index"):
            port = free_port()
            server = Server(f"ours (PostgreSQL, {mode})", api_argv(port, workers),
                            {**env, "SMARTSVC_SPOT_SEARCH": mode}, root / f"api-postgres-{mode}.log", port)
            servers[mode] = server
            server.launch()
        for mode, server in servers.items():
            server.wait_ready("/v1/health", timeout=1800)
            if mode == "index":
                out["index_warm_up"] = warm_workers(ctx, server, paths, driver["token"], workers, cfg["warm_waves"])
            else:
                warm_requests(server, paths, driver["token"], cfg["postgis_warm_requests"])
        out["answers_compared"] = _compare_answers(servers["postgis"], servers["index"], paths[:20], driver["token"])
        threads = gunicorn_options("127.0.0.1", 0, workers)["threads"]
        levels = {"saturated": workers * threads}
        out["load"] = load_rounds(ctx, {"ceiling": (ceiling, ceiling_file, driver["token"]),
                                        "postgis": (servers["postgis"], paths_file, driver["token"]),
                                        "index": (servers["index"], paths_file, driver["token"])}, levels,
                                  {**cfg, "rounds": cfg["postgis_rounds"]})
        out["versions"] = pg.versions()
    finally:
        # The ceiling too: this was its last use (run() stops it when this part fails or is skipped).
        stop_all([*servers.values(), ceiling], cfg["graceful_stop"])
        pg.server.drop_database(name)
    return out


def run(ctx: Context) -> dict[str, Any]:
    cfg = dict(SMOKE if ctx.smoke else FULL)
    if ctx.options.get("http_spots"):
        cfg["spots"] = cfg["postgis_spots"] = int(ctx.options["http_spots"])
    if ctx.options.get("http_duration"):
        cfg["duration_s"] = float(ctx.options["http_duration"])
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is missing: run `make bench-sysdeps` (Debian package wrk)")
    with_postgis = not ctx.options.get("no_postgis", False)
    workers = os.cpu_count() or 1
    root = ctx.tmp / "http"
    root.mkdir(parents=True, exist_ok=True)
    options = gunicorn_options("127.0.0.1", 0, workers)
    sqlite, ceiling = _sqlite_part(ctx, cfg, workers, root, root / "ceiling-items.json")
    assert ceiling is not None
    try:
        postgis = _postgis_part(ctx, cfg, workers, root, ceiling) if with_postgis else None
    finally:
        ceiling.stop()

    sat, light = sqlite["load"]["saturated"], sqlite["load"].get("light")
    ratios: dict[str, Any] = {"ours_over_ceiling_rps_saturated": paired_ratio(sat, "ours")}
    if light is not None:
        ratios["ours_over_ceiling_rps_light"] = paired_ratio(light, "ours")
    if postgis is not None:
        pl = postgis["load"]["saturated"]
        ratios["postgres_postgis_over_ceiling_rps"] = paired_ratio(pl, "postgis")
        ratios["postgres_index_over_ceiling_rps"] = paired_ratio(pl, "index")
        ratios["postgres_index_over_postgis_rps"] = ratio(pl["index"]["rps"], pl["postgis"]["rps"])
    measured_ratio = ratios["ours_over_ceiling_rps_saturated"] or 0.0
    targets = {
        "rps_over_ceiling": {"target_min": TARGET_RPS_RATIO, "measured": measured_ratio,
                             "met": measured_ratio >= TARGET_RPS_RATIO, "connections": sat["connections"]},
        "p99_ms": {"target_max": TARGET_P99_MS, "measured": sat["ours"]["p99_ms"],
                   "met": sat["ours"]["p99_ms"] <= TARGET_P99_MS, "connections": sat["connections"]},
    }
    if light is not None:
        targets["p99_ms_light"] = {"target_max": TARGET_P99_MS, "measured": light["ours"]["p99_ms"],
                                   "met": light["ours"]["p99_ms"] <= TARGET_P99_MS, "connections": light["connections"]}
    builds = [b["build_s"] for b in sqlite["warm_up"]["builds"] if b.get("build_s") is not None]
    return {
        "params": {**cfg, "workers": workers, "radius_m": RADIUS_M, "limit": LIMIT, "duration_min": DURATION_MIN,
                   "warm_distinct_times": WARM_DISTINCT_TIMES, "vehicle": "smart_fortwo",
                   "gunicorn": {k: v for k, v in options.items() if k != "bind"},
                   "wrk": "wrk --latency -t{wrk_threads} -c{connections} -d{duration_s}s -s bench/wrk_rotate.lua",
                   "postgis": with_postgis},
        "versions": {"wrk": _wrk_version(), **((postgis or {}).get("versions") or {})},
        "results": {"sqlite": sqlite, "postgres": postgis,
                    "index_build_s_per_process": builds},
        "ratios": ratios,
        "targets": targets,
    }


def _wrk_version() -> str | None:
    try:
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0] if text else None


# --------------------------------------------------------------------------- tables


def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def tables(result: dict[str, Any]) -> list[Table]:
    res = result["results"]
    sqlite = res["sqlite"]
    t = Table(title=f"GET /v1/spots over HTTP, {result['params']['spots']:,} spots, "
                    f"{result['params']['workers']} workers (medians of {result['params']['rounds']} rounds)")
    for col in ("what", "connections", "req/s", "p50 ms", "p90 ms", "p99 ms", "p99 worst", "bytes/resp",
                "errors"):
        t.add_column(col, justify="right" if col != "what" else "left")

    def add(label: str, level: dict[str, Any], name: str) -> None:
        s = level[name]
        errors = sum(s["errors"].values())
        t.add_row(label, str(level["connections"]), _f(s["rps"], 0), _f(s["p50_ms"]), _f(s["p90_ms"]),
                  _f(s["p99_ms"]), _f(s["p99_ms_worst"]), _f(s["bytes_per_response"], 0), str(errors))

    for level in sqlite["load"]:
        add(f"ceiling ({level})", sqlite["load"][level], "ceiling")
        add(f"ours SQLite/index ({level})", sqlite["load"][level], "ours")
    pg = res.get("postgres")
    if pg:
        lv = pg["load"]["saturated"]
        add("ceiling (PostgreSQL round)", lv, "ceiling")
        add("ours PostgreSQL/postgis", lv, "postgis")
        add("ours PostgreSQL/index", lv, "index")

    st = Table(title="One request in-process, ms (p50 / p99)")
    st.add_column("stage")
    st.add_column("p50 / p99", justify="right")
    for name, s in sqlite["in_process"]["stages"].items():
        st.add_row(name, f"{s['p50_ms']:.3f} / {s['p99_ms']:.3f}")

    rt = Table(title="Ratios, targets, set-up")
    rt.add_column("what")
    rt.add_column("value", justify="right")
    for k, v in result["ratios"].items():
        rt.add_row(k, _f(v, 3))
    for k, v in result["targets"].items():
        bound = f"≤ {v['target_max']}" if "target_max" in v else f"≥ {v['target_min']}"
        rt.add_row(f"target {k} ({bound}, c={v['connections']})", f"{_f(v['measured'], 3)} "
                   f"{'met' if v['met'] else 'NOT met'}")
    rt.add_row("index builds (SQLite), s", ", ".join(_f(b, 1) for b in res["index_build_s_per_process"]))
    warm = sqlite["warm_up"]
    rt.add_row("built in the gunicorn master / builds in workers",
               f"{'yes' if warm.get('built_in_master') else 'no'} / {warm.get('worker_builds')}")
    rt.add_row("store the city (SQLite), s", _f(sqlite["stored"]["store_s"], 1))
    rt.add_row("worker restarts / index rebuilds during load",
               f"{sqlite['during_load']['worker_restarts']} / {sqlite['during_load']['index_rebuilds']}")
    if pg:
        rt.add_row("store the city (PostgreSQL), s", _f(pg["stored"]["store_s"], 1))
        builds = [b["build_s"] for b in pg.get("index_warm_up", {}).get("builds", [])]
        rt.add_row("index builds (PostgreSQL), s", ", ".join(_f(b, 1) for b in builds))
        cmp = pg.get("answers_compared") or {}
        rt.add_row("postgis vs index: same spots / same order (queries)",
                   f"{cmp.get('same_set')} / {cmp.get('same_order')} ({cmp.get('queries')}), "
                   f"max distance gap {_f(cmp.get('max_distance_gap_m'), 3)} m")
    return [t, st, rt]
