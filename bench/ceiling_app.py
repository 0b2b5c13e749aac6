"""The framework ceiling of benchmark 2: a minimal Flask app served exactly like ``smartsvc api``.

``python -m bench.ceiling_app --port P --workers N [--items FILE]`` starts
gunicorn through :func:`smartsvc.cli.processes.serve_api` — same worker
class, threads, worker count, timeouts and worker recycling as the real
API — with an app of one endpoint, ``GET /items``, returning a 20-item JSON
list. With ``--items`` the list is a real ``GET /v1/spots`` answer's
``items`` (saved by the benchmark), so both bodies have the same size; the
dicts are encoded to JSON on every request, as Flask does for any view.
Nothing else: no authentication, argument parsing, database, rate limit,
request id or access log — that is what "framework ceiling" means.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from flask import Flask

ITEMS_ENV = "BENCH_CEILING_ITEMS"


def _synthetic_items(count: int = 20) -> list[dict[str, Any]]:
    """Items shaped like spot search results, for a run without a saved answer."""
    return [
        {
            "id": f"0190f2c4-5e2b-7cc1-9a3e-3c1f7d2b9a10.{i}",
            "geometry": {"type": "LineString", "coordinates": [[13.4001234 + i * 1e-4, 52.5201234],
                                                               [13.4003456 + i * 1e-4, 52.5201234]]},
            "distance_m": 12.34 + i,
            "kind": "curb",
            "orientation": "parallel",
            "length_m": 15.2,
            "fits": True,
            "spaces_for_vehicle": 4,
            "allowed_until": "2026-11-24T20:00:00+01:00",
            "max_stay_min": 120.0,
            "fee": True,
            "why": ["15.2 m curb holds 4 cars of 2.69 m (needs 3.69 m each)",
                    "paid parking (3 EUR per 60 min) until 20:00, at most 120 min"],
            "source": {"dataset": "0190f2c4-5e2b-7cc1-9a3e-3c1f7d2b9a10", "feature_id": f"c{i}"},
        }
        for i in range(count)
    ]


def create_app() -> Flask:
    """The ceiling app; its items come from ``$BENCH_CEILING_ITEMS`` (a JSON list) when set.

    The file is read at the first request (the benchmark starts this server while ours
    is still starting, and writes the file from our first answer).
    """
    path = os.environ.get(ITEMS_ENV)
    loaded: list[Any] = []
    app = Flask("ceiling")
    app.json.sort_keys = False  # type: ignore[attr-defined]  # as smartsvc

    @app.get("/items")
    def get_items() -> dict[str, Any]:
        if not loaded:
            loaded.append(json.loads(Path(path).read_text()) if path and Path(path).exists() else _synthetic_items())
        return {"items": loaded[0]}

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main(argv: list[str] | None = None) -> None:
    from smartsvc.cli.processes import serve_api

    parser = argparse.ArgumentParser(prog="python -m bench.ceiling_app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--items", type=Path, help="JSON file with the list of items to return")
    args = parser.parse_args(argv)
    if args.items is not None:
        os.environ[ITEMS_ENV] = str(args.items.resolve())
    serve_api(args.host, args.port, args.workers, factory=create_app)


if __name__ == "__main__":
    main()
