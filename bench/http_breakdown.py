"""Benchmark 2's in-process breakdown: where one request's time goes, stage by stage, and a profile."""

from __future__ import annotations

import cProfile
import io
import pstats
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from bench.citygen import City
from bench.common import Context, summarize
from bench.http_city import make_driver, search_paths, store_city
from bench.http_servers import in_process_app, service_env

# --------------------------------------------------------------------------- in-process breakdown


# The clock of the in-process breakdown: this thread's CPU time, so that other processes on a busy
# machine (the servers, other sessions) do not inflate it; nothing in a request waits for I/O but SQLite.
CLOCK = time.thread_time


def _timeit(fn: Any, repeat: int) -> dict[str, float]:
    clock = CLOCK
    times = []
    for _ in range(repeat):
        t = clock()
        fn()
        times.append(clock() - t)
    return summarize(times)


def breakdown(ctx: Context, app: Any, driver: dict[str, str], paths: list[str], repeat: int) -> dict[str, Any]:
    """Where one request's time goes, stage by stage in this process, and a profile of whole requests."""
    from geodata.search import to_dicts
    from werkzeug.datastructures import MultiDict

    from smartsvc.http.spots import SpotSearchArgs, SpotsSchema, _fast_args
    from smartsvc.services.auth import authenticate
    from smartsvc.services.spot_query import SpotQuery
    from smartsvc.services.spots import owned_product_model, search_spots, search_spots_for_token, vehicle_of

    container = app.extensions["smartsvc"]
    database, tokens, finder = container.database, container.tokens, container.spot_finder
    client = app.test_client()
    headers = {"Authorization": f"Bearer {driver['token']}"}
    t0 = time.perf_counter()
    status = client.get(paths[0], headers=headers).status_code
    first_s = time.perf_counter() - t0
    if status != 200:
        raise RuntimeError(f"in-process search answered {status}")
    n = min(repeat, len(paths))
    for p in paths[:n]:  # warm every start time's decisions
        client.get(p, headers=headers)
    clock = CLOCK
    whole = []
    for p in paths[:n]:
        t = clock()
        client.get(p, headers=headers)
        whole.append(clock() - t)

    # Stages, on one representative query: the pieces of the view, each with its own session where it
    # needs one (so their sum is a little more than the whole).
    raw_args = dict(parse_qsl(paths[0].split("?", 1)[1]))
    args = SpotSearchArgs().load(raw_args)
    user_id = uuid.UUID(driver["user_id"])
    query = SpotQuery(lat=args["lat"], lon=args["lon"], radius_m=args["radius_m"], product_id=args["product_id"],
                      at=args["at"], duration_min=args["duration_min"], limit=args["limit"])
    with database.session() as session:
        vehicle = vehicle_of(owned_product_model(session, user_id, query.product_id))
    stages: dict[str, Any] = {}
    stages["parse_args"] = _timeit(lambda: SpotSearchArgs().load(raw_args), n)
    stages["authenticate"] = _timeit(lambda: authenticate(database, tokens, driver["token"]), n)

    def product() -> None:
        with database.session() as session:
            vehicle_of(owned_product_model(session, user_id, query.product_id))

    stages["product_lookup"] = _timeit(product, n)
    live_index = getattr(finder, "live_index", None)
    if live_index is not None:
        from geodata.search import search

        def staleness() -> None:
            with database.session() as session:
                live_index.current(session)

        stages["index_staleness_check"] = _timeit(staleness, n)
        with database.session() as session:
            index = live_index.current(session).index
        stages["search"] = _timeit(lambda: search(index, query.lat, query.lon, query.radius_m, vehicle, query.at,
                                                  query.duration_min, query.limit), n)
    stages["search_spots_one_session"] = _timeit(
        lambda: search_spots(database, finder, user_id, query), n)
    # The hot path the view takes (smartsvc/http/spots.py): arguments through the schema's fields, the
    # token's signature, then one statement (token generation + product + live version) and the search.
    query_args = MultiDict(raw_args)
    stages["hot_path_args"] = _timeit(lambda: _fast_args(query_args), n)
    stages["hot_path_verify_token"] = _timeit(lambda: tokens.verify(driver["token"]), n)
    generation = tokens.verify(driver["token"]).generation
    stages["hot_path_search_spots_for_token"] = _timeit(
        lambda: search_spots_for_token(database, finder, user_id, generation, query), n)
    results = search_spots(database, finder, user_id, query)
    stages["serialise_to_dicts"] = _timeit(lambda: to_dicts(results), n)
    body = {"items": to_dicts(results)}
    with app.app_context():
        stages["json_encode"] = _timeit(lambda: app.json.dumps(body), n)
    stages["whole_request_test_client"] = summarize(whole)
    # No longer on the path, for reference: what each item's own to_dict and a marshmallow dump cost.
    stages["not_on_path_to_dict_x20"] = _timeit(lambda: [r.to_dict() for r in results], n)
    stages["not_on_path_schema_dump"] = _timeit(lambda: SpotsSchema().dump(body), n)

    # A profile of whole requests (test client): the functions that take the most time, inclusive.
    profiler = cProfile.Profile()
    profiler.enable()
    for p in paths[:n]:
        client.get(p, headers=headers)
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).strip_dirs().sort_stats("cumulative").print_stats(40)
    stats = pstats.Stats(profiler)
    top = []
    for (filename, line, func), (cc, nc, tt, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        top.append({"function": f"{Path(filename).name}:{line}({func})", "calls_per_request": nc / n,
                    "own_us_per_request": tt / n * 1e6, "incl_us_per_request": ct / n * 1e6})
    top.sort(key=lambda x: -x["own_us_per_request"])
    ctx.log(f"in-process: whole request p50 {stages['whole_request_test_client']['p50_ms']:.3f} ms, "
            f"search p50 {stages.get('search', {}).get('p50_ms', float('nan')):.3f} ms")
    # The framework ceiling's app through the same test client, for scale.
    from bench.ceiling_app import create_app as ceiling_app

    ceiling_client = ceiling_app().test_client()
    ceiling_client.get("/items")
    stages["ceiling_whole_request_test_client"] = _timeit(lambda: ceiling_client.get("/items"), n)
    return {"first_request_s": round(first_s, 2), "requests": n, "stages": stages, "results": len(results),
            "profile_top_own_time": top[:25], "profile_cumulative_text": text.getvalue()[-12000:]}


def breakdown_part(ctx: Context, cfg: dict[str, Any], root: Path, app: Any, driver: dict[str, str],
                    paths: list[str]) -> dict[str, Any]:
    """The in-process breakdown on the served database, or on a smaller city of its own (``breakdown_spots``)."""
    n = cfg.get("breakdown_spots") or 0
    if not n or n >= cfg["spots"]:
        return {"spots": cfg["spots"], **breakdown(ctx, app, driver, paths, cfg["profile_requests"])}
    city = City(n)
    small = in_process_app(service_env(root / "var-breakdown"))
    database = small.extensions["smartsvc"].database
    stored = store_city(database, city, "bench city (breakdown)")
    small_driver = make_driver(small)
    small_paths = search_paths(city, small_driver["product_id"], cfg["profile_requests"])
    try:
        return {"spots": n, "stored": stored,
                **breakdown(ctx, small, small_driver, small_paths, cfg["profile_requests"])}
    finally:
        database.engine.dispose()
