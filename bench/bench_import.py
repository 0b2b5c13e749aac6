"""Benchmark 5 — import: a 1,000,000-feature GeoJSON end to end (BENCHMARKS.md).

The file is written by :meth:`bench.citygen.City.write_geojson` (normalized
properties, as ``Spot.to_feature()``) into a temporary directory. Measured,
each in a child process of its own so that wall time and peak RSS (``wait4``)
belong to it alone:

- **ours**: ``geodata.readers.open_reader`` over the file, every feature
  normalized into a ``Spot`` (``python -m bench.bench_import read FILE``);
- **ogr2ogr → PostGIS** (reference): GDAL loading the same file into a
  geography table with a GiST index (COPY mode), then counting the rows;
- **service** (hook): the service-side import into the database
  (``smartsvc.services.datasets``) — see :func:`service_import`.

Targets: ≤ 60 s and peak RSS ≤ 1 GiB for our read of 1M features; the ratio to
ogr2ogr is reported.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.table import Table

from bench.citygen import City
from bench.common import Context, peak_rss_bytes, ratio, rss_bytes, run_measured

NAME = "import"
TITLE = "Benchmark 5 — import a GeoJSON file"

# The service import (database writes) runs on a smaller file of its own: at the smoke run's ~1,000
# features/s a million would take a quarter of an hour; its features/s are reported, and the time
# for a million extrapolated.
# service_backends: the smoke run imports into SQLite only (three `smartsvc` process starts per backend
# are most of its time); the full run into both.
FULL = {"features": 1_000_000, "service_features": 50_000, "service_backends": ("postgres", "sqlite")}
SMOKE = {"features": 5_000, "service_features": 5_000, "service_backends": ("sqlite",)}

TARGET_SECONDS_PER_MILLION = 60.0
TARGET_PEAK_RSS_BYTES = 1 << 30

OGR_TABLE = "import_ogr"


# --------------------------------------------------------------------------- the child: our reader


def read_file(path: str) -> dict[str, Any]:
    """Read ``path`` through open_reader to the end (every feature normalized); counts, time, RSS."""
    from geodata.readers import ReadOptions, open_reader

    base_rss = rss_bytes()
    t0 = time.perf_counter()
    spots = rejected = features = 0
    with open(path, "rb") as fp:
        reader = open_reader(fp, None, ReadOptions(dataset="bench-city", timezone="Europe/Berlin"))
        fmt = reader.format
        for result in reader:
            features += 1
            spots += len(result.spots)
            rejected += result.rejected
    elapsed = time.perf_counter() - t0
    return {"format": fmt, "features": features, "spots": spots, "rejected": rejected, "read_s": elapsed,
            "rss_after_imports_bytes": base_rss, "peak_rss_bytes": peak_rss_bytes()}


# --------------------------------------------------------------------------- the references


def ogr2ogr_load(ctx: Context, path: Path) -> dict[str, Any]:
    """ogr2ogr → PostGIS: the same file into a geography table with a GiST index, COPY mode."""
    ogr = shutil.which("ogr2ogr")
    if ogr is None:
        raise RuntimeError("ogr2ogr not found: run `make bench-sysdeps` (Debian package gdal-bin)")
    pg = ctx.postgres()
    with pg.connect() as conn:
        conn.execute(f"DROP TABLE IF EXISTS {OGR_TABLE}")
    argv = [ogr, "-f", "PostgreSQL", pg.ogr_dsn(), str(path), "-nln", OGR_TABLE, "-nlt", "GEOMETRY",
            "-lco", "GEOM_TYPE=geography", "-lco", "GEOMETRY_NAME=geog", "-lco", "SPATIAL_INDEX=GIST",
            "-lco", "UNLOGGED=ON", "-gt", "65536", "--config", "PG_USE_COPY", "YES"]
    env = dict(os.environ, PGCLIENTENCODING="UTF8")
    m = run_measured(argv, env=env)
    if m.returncode != 0:
        raise RuntimeError(f"ogr2ogr failed ({m.returncode}): {m.stderr[-3000:]}")
    with pg.connect() as conn:
        rows = conn.execute(f"SELECT count(*) FROM {OGR_TABLE}").fetchone()[0]
        indexed = conn.execute("SELECT count(*) FROM pg_indexes WHERE tablename = %s AND indexdef ILIKE %s",
                               (OGR_TABLE, "%gist%")).fetchone()[0]
        version = subprocess.run([ogr, "--version"], capture_output=True, text=True).stdout.strip()
        conn.execute(f"DROP TABLE IF EXISTS {OGR_TABLE}")
    return {"wall_s": m.wall_s, "peak_rss_bytes": m.max_rss_bytes, "rows": int(rows), "gist_index": bool(indexed),
            "version": version, "argv": " ".join(argv[:1] + ["-f", "PostgreSQL", "PG:…", "FILE"] + argv[5:])}


def service_import(ctx: Context, features: int, backend: str = "postgres") -> dict[str, Any]:
    """HOOK — the service-side import into the database (datasets pipeline), end to end.

    "pending" while ``smartsvc/services/datasets.py`` does not exist (it was
    being written alongside the bench). When it does, this runs the documented CLI entry point
    ``smartsvc import FILE --layer parking`` (API.md: "the same import as the
    API, with a progress bar") in a child process against a fresh, migrated
    PostgreSQL database of the bench server, measured like our reader
    (wall time, peak RSS) — nothing here imports the module itself, so the
    bench never depends on its internals. If the command's shape differs
    when it lands, adapt ``argv`` below; the result keys stay. The file has
    ``features`` features (``FULL["service_features"]``).
    """
    if importlib.util.find_spec("smartsvc.services.datasets") is None:
        return {"status": "pending", "reason": "smartsvc.services.datasets does not exist yet"}
    smartsvc_cli = [sys.executable, "-m", "smartsvc"]
    path = ctx.tmp / f"service-{features}.geojson"
    if not path.exists():
        City(features).write_geojson(path)
    var_dir = ctx.tmp / f"service-var-{backend}"
    shutil.rmtree(var_dir, ignore_errors=True)
    var_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTSVC_")}
    env["SMARTSVC_VAR_DIR"] = str(var_dir)  # SQLite: the embedded database in it
    database = "bench_service_import"
    if backend == "postgres":
        pg = ctx.postgres()
        pg.server.drop_database(database)
        pg.create_database(database)
        env["SMARTSVC_DATABASE_URL"] = pg.server.url(database)
    try:
        # The schema as `smartsvc db upgrade` makes it, migrated here as the other benchmarks do: a
        # `smartsvc db` process would spend ~3 s of CPU importing the service for a 0.1 s migration.
        from bench.http_servers import in_process_app

        try:
            in_process_app(env).extensions["smartsvc"].database.engine.dispose()
        except Exception as exc:  # noqa: BLE001 — reported in the result, as the import's own failure is
            return {"status": "failed", "reason": f"migrating the database: {exc!r}"}
        m = run_measured([*smartsvc_cli, "import", str(path), "--layer", "parking", "--time-zone", "Europe/Berlin"],
                         env=env, timeout=120 if ctx.smoke else 1800)
        # Told by the command itself rather than by a `smartsvc import --help` first: one process start less.
        if m.returncode == 2 and "No such command 'import'" in m.stderr:
            return {"status": "pending", "reason": "`smartsvc import` is not available yet"}
        if m.returncode != 0:
            return {"status": "failed", "reason": f"smartsvc import exited {m.returncode}: {m.stderr[-2000:]}"}
        if backend == "postgres":
            import psycopg

            with psycopg.connect(pg.server.dsn(database), autocommit=True) as conn:
                rows = conn.execute("SELECT count(*) FROM layer_features").fetchone()[0]
        else:
            import sqlite3

            with sqlite3.connect(next(var_dir.glob("*.db"))) as conn:
                rows = conn.execute("SELECT count(*) FROM layer_features").fetchone()[0]
        return {"status": "measured", "backend": backend, "features": features, "wall_s": m.wall_s,
                "features_per_s": features / m.wall_s,
                "seconds_per_million_extrapolated": m.wall_s * 1_000_000 / features,
                "peak_rss_bytes": m.max_rss_bytes, "rows": int(rows)}
    finally:
        if backend == "postgres":
            pg.server.drop_database(database)
        shutil.rmtree(var_dir, ignore_errors=True)


# --------------------------------------------------------------------------- the benchmark


def run(ctx: Context) -> dict[str, Any]:
    cfg = dict(SMOKE if ctx.smoke else FULL)
    if ctx.options.get("import_features"):
        cfg["features"] = int(ctx.options["import_features"])
    n = cfg["features"]
    path = ctx.tmp / f"city-{n}.geojson"
    city = City(n)
    t = time.perf_counter()
    size = city.write_geojson(path)
    write_s = time.perf_counter() - t
    ctx.log(f"import: wrote {n:,} features ({size / 1e6:.0f} MB) in {write_s:.1f} s")

    m = run_measured([sys.executable, "-m", "bench.bench_import", "read", str(path)])
    if m.returncode != 0:
        raise RuntimeError(f"the reader child failed ({m.returncode}): {m.stderr[-3000:]}")
    ours = json.loads(m.stdout.strip().splitlines()[-1])
    ours.update({"wall_s": m.wall_s, "peak_rss_wait4_bytes": m.max_rss_bytes})
    ours["features_per_s"] = ours["features"] / ours["read_s"] if ours["read_s"] else None
    if ours["features"] != n or ours["spots"] != n or ours["rejected"]:
        raise RuntimeError(f"our reader did not read every feature: {ours}")
    ctx.log(f"import: ours read {n:,} features in {ours['read_s']:.1f} s, peak RSS {ours['peak_rss_bytes'] / 2**20:.0f} MiB")

    ogr = ogr2ogr_load(ctx, path)
    if ogr["rows"] != n:
        raise RuntimeError(f"ogr2ogr loaded {ogr['rows']} rows, not {n}")
    ctx.log(f"import: ogr2ogr → PostGIS in {ogr['wall_s']:.1f} s, peak RSS {ogr['peak_rss_bytes'] / 2**20:.0f} MiB")
    path.unlink()
    skipped = {"status": "skipped", "reason": "not in this run's service_backends"}
    service = service_import(ctx, min(cfg["service_features"], n)) if "postgres" in cfg["service_backends"] else skipped
    if service.get("status") == "measured":
        ctx.log(f"import: service import (PostgreSQL) of {service['features']:,} features in {service['wall_s']:.1f} s")
    service_sqlite = (service_import(ctx, min(cfg["service_features"], n), backend="sqlite")
                      if "sqlite" in cfg["service_backends"] else skipped)
    if service_sqlite.get("status") == "measured":
        ctx.log(f"import: service import (SQLite) of {service_sqlite['features']:,} features in "
                f"{service_sqlite['wall_s']:.1f} s")
    (ctx.tmp / f"service-{min(cfg['service_features'], n)}.geojson").unlink(missing_ok=True)

    per_million = ours["read_s"] * 1_000_000 / n
    ratios = {
        "ours_read_over_ogr2ogr_wall": ratio(ours["read_s"], ogr["wall_s"]),
        "ours_wall_over_ogr2ogr_wall": ratio(ours["wall_s"], ogr["wall_s"]),
        "ours_peak_rss_over_ogr2ogr_peak_rss": ratio(ours["peak_rss_bytes"], ogr["peak_rss_bytes"]),
    }
    if service_sqlite.get("status") == "measured":
        ratios["service_sqlite_s_per_feature_over_ogr2ogr"] = ratio(
            service_sqlite["wall_s"] / service_sqlite["features"], ogr["wall_s"] / n)
    if service.get("status") == "measured":
        # Per feature: the service file may be smaller than the one ogr2ogr loaded.
        ratios["service_s_per_feature_over_ogr2ogr"] = ratio(service["wall_s"] / service["features"],
                                                             ogr["wall_s"] / n)
    targets = {
        "read_seconds_per_million": {"target_max": TARGET_SECONDS_PER_MILLION, "measured": per_million,
                                     "met": per_million <= TARGET_SECONDS_PER_MILLION},
        "peak_rss_bytes": {"target_max": TARGET_PEAK_RSS_BYTES, "measured": ours["peak_rss_bytes"],
                           "met": ours["peak_rss_bytes"] <= TARGET_PEAK_RSS_BYTES},
    }
    return {
        "params": {**cfg, "file_bytes": size, "write_s": write_s, "format": "GeoJSON FeatureCollection, "
                   "normalized properties (Spot.to_feature)"},
        "results": {"ours": ours, "ogr2ogr_postgis": ogr, "service_import": service,
                    "service_import_sqlite": service_sqlite},
        "ratios": ratios,
        "targets": targets,
    }


def tables(result: dict[str, Any]) -> list[Table]:
    r = result["results"]
    t = Table(title=f"Import {result['params']['features']:,} features "
                    f"({result['params']['file_bytes'] / 1e6:.0f} MB GeoJSON)")
    for col in ("what", "seconds", "features/s", "peak RSS MiB"):
        t.add_column(col, justify="right" if col != "what" else "left")
    n = result["params"]["features"]
    ours, ogr, svc = r["ours"], r["ogr2ogr_postgis"], r["service_import"]
    t.add_row("ours: open_reader, every feature normalized", f"{ours['read_s']:.1f}", f"{n / ours['read_s']:,.0f}",
              f"{ours['peak_rss_bytes'] / 2**20:.0f}")
    t.add_row("ogr2ogr → PostGIS (COPY, GiST)", f"{ogr['wall_s']:.1f}", f"{n / ogr['wall_s']:,.0f}",
              f"{ogr['peak_rss_bytes'] / 2**20:.0f}")
    for label, svc in (("PostgreSQL", svc), ("SQLite", r.get("service_import_sqlite") or {})):
        if svc.get("status") == "measured":
            t.add_row(f"service import (smartsvc import, {label}), {svc['features']:,} features",
                      f"{svc['wall_s']:.1f}", f"{svc['features_per_s']:,.0f}", f"{svc['peak_rss_bytes'] / 2**20:.0f}")
        else:
            t.add_row(f"service import ({label}): {svc.get('status')}", "—", "—", "—")
    rt = Table(title="Ratios and targets")
    rt.add_column("what")
    rt.add_column("value", justify="right")
    for k, v in result["ratios"].items():
        rt.add_row(k, "—" if v is None else f"{v:.2f}")
    for k, v in result["targets"].items():
        measured = v["measured"]
        shown = f"{measured / 2**20:.0f} MiB" if k == "peak_rss_bytes" else f"{measured:.1f} s"
        limit = f"{v['target_max'] / 2**20:.0f} MiB" if k == "peak_rss_bytes" else f"{v['target_max']:.0f} s"
        rt.add_row(f"target {k} (≤ {limit})", f"{shown} {'met' if v['met'] else 'NOT met'}")
    return [t, rt]


def _main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "read":
        print(json.dumps(read_file(argv[1])))
        return 0
    print("usage: python -m bench.bench_import read FILE", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
