"""``smartsvc api`` builds the spot index once in the gunicorn master; workers start from that copy."""

from __future__ import annotations

import logging

from shapely.geometry import LineString

from geodata.model import Rule, Spot
from smartsvc.cli.processes import preloaded_app_factory
from smartsvc.services.layers import live_layer
from tests.support.factories import api_key, make_app, make_settings, make_user
from tests.support.geodata import add_vehicle_model, own, store_dataset

HERE = (48.85, 2.35)


def _curb(fid: str, offset: float) -> Spot:
    lon = HERE[1] + offset
    return Spot(LineString([(lon, HERE[0] + 0.00005), (lon + 0.0002, HERE[0] + 0.00005)]), kind="curb",
                orientation="parallel", length_m=14.7, rules=(Rule(None, "parking"),), source_feature_id=fid)


def _builds(caplog) -> int:
    # A record may reach the handler twice (from the logger and, when it propagates, from the root).
    return len({id(r) for r in caplog.records if getattr(r, "event", None) == "spot_index_built"})


def _held(app):
    container = app.extensions["smartsvc"]
    with container.database.session() as session:
        live = live_layer(session, "parking")
    return container.spot_finder.live_index.held_for(live)


def test_a_worker_answers_from_the_masters_index_until_a_publish_replaces_it(tmp_path, caplog):
    index_log = logging.getLogger("smartsvc.services.spot_index")
    index_log.addHandler(caplog.handler)  # the service's loggers do not propagate to the root
    index_log.setLevel(logging.INFO)
    try:
        _check(tmp_path, caplog)
    finally:
        index_log.removeHandler(caplog.handler)
        index_log.setLevel(logging.NOTSET)


def _check(tmp_path, caplog) -> None:
    master = make_app(make_settings(tmp_path / "var"))
    client = master.test_client()
    operator, app_key = api_key(master, "operator"), api_key(master, "app")
    alice = make_user(client, app_key, "alice")
    product = own(client, alice, add_vehicle_model(client, operator, "fortwo", length_m=2.69))
    database = master.extensions["smartsvc"].database
    store_dataset(database, [_curb("first", 0.0)])

    factory = preloaded_app_factory(master)  # what `smartsvc api` does before gunicorn forks
    assert _builds(caplog) == 1
    assert database.engine.pool.checkedout() == 0  # no connection of the master's crosses the fork
    worker = factory()
    query = {"lat": HERE[0], "lon": HERE[1], "radius_m": 300, "product_id": product}
    answer = worker.test_client().get("/v1/spots", query_string=query, headers=alice.headers)

    assert answer.status_code == 200
    assert [i["source"]["feature_id"] for i in answer.get_json()["items"]] == ["first"]
    assert _builds(caplog) == 1  # the worker did not read the layer again
    assert _held(worker) is _held(master)

    store_dataset(database, [_curb("second", 0.0005)])  # a later publish: the inherited index is stale
    answer = worker.test_client().get("/v1/spots", query_string=query, headers=alice.headers)

    assert [i["source"]["feature_id"] for i in answer.get_json()["items"]] == ["second"]
    assert _builds(caplog) == 2
    worker.extensions["smartsvc"].database.engine.dispose()
    database.engine.dispose()
