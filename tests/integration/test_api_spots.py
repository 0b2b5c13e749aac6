"""``GET /v1/spots`` over HTTP, on SQLite (in-process index) and on PostgreSQL (PostGIS)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from geographiclib.geodesic import Geodesic
from shapely.geometry import LineString, Polygon

from geodata.model import Rate, Rule, Spot
from smartsvc.http.spots import SpotsSchema
from smartsvc.models import LiveLayer
from tests.integration.conftest import close_app
from tests.support.factories import api_key, bearer, make_app, make_user
from tests.support.geodata import add_vehicle_model, own, publish_dataset, store_dataset

HERE = (48.8500, 2.3500)
TUESDAY_10 = "2025-06-03T10:00:00+02:00"  # Paris summer time
FREE = (Rule(None, "parking"),)
PAID = (Rule("Mo-Sa 09:00-20:00", "parking", "public", 120, True, Rate(2.5, 60, "EUR")), Rule(None, "parking"))
CLEANING = (Rule("Tu 11:00-13:00", "no_parking"), Rule(None, "parking"))
ITEM_FIELDS = {"id", "geometry", "distance_m", "kind", "orientation", "length_m", "fits", "spaces_for_vehicle",
               "allowed_until", "max_stay_min", "fee", "why", "source"}


def east(metres: float, north: float = 0.0) -> tuple[float, float]:
    """(lon, lat) so many metres east (and north) of HERE."""
    p = Geodesic.WGS84.Direct(HERE[0], HERE[1], 90, metres)
    if north:
        p = Geodesic.WGS84.Direct(p["lat2"], p["lon2"], 0, north)
    return p["lon2"], p["lat2"]


def curb(start_m: float, length: float, rules, fid: str, north: float = 5.0, **kw: Any) -> Spot:
    return Spot(LineString([east(start_m, north), east(start_m + length, north)]), kind="curb",
                orientation="parallel", length_m=length, rules=rules, source_feature_id=fid, **kw)


def street() -> list[Spot]:
    return [
        curb(20, 5.4, FREE, "gap"),
        curb(60, 12.0, PAID, "paid"),
        curb(90, 10.0, CLEANING, "cleaning"),
        Spot(Polygon([east(150), east(180), east(180, 30), east(150, 30), east(150)]), kind="lot",
             max_vehicle_height_m=2.0, max_vehicle_weight_kg=2500, capacity=120, rules=FREE,
             source_feature_id="garage"),
        curb(200, 30.0, (Rule(None, "parking", "residents"),), "residents"),
        curb(800, 30.0, FREE, "far"),
    ]


@pytest.fixture
def world(db_app, db_client) -> dict[str, Any]:
    """Keys, two users, their cars, and the street published as the live parking layer."""
    operator, app_key = api_key(db_app, "operator"), api_key(db_app, "app")
    alice, bob = make_user(db_client, app_key, "alice"), make_user(db_client, app_key, "bob")
    models = {
        "smart": add_vehicle_model(db_client, operator, "fortwo", length_m=2.69, width_m=1.66, height_m=1.55,
                                   weight_kg=1095),
        "golf": add_vehicle_model(db_client, operator, "golf", length_m=4.5, width_m=1.8, height_m=1.5,
                                  weight_kg=1400),
        "van": add_vehicle_model(db_client, operator, "van", length_m=5.4, width_m=2.0, height_m=2.6,
                                 weight_kg=3200),
        "heavy": add_vehicle_model(db_client, operator, "heavy", length_m=4.9, width_m=1.9, height_m=1.9,
                                   weight_kg=2800),
        "bike": add_vehicle_model(db_client, operator, "no length"),
    }
    products = {name: own(db_client, alice, model_id) for name, model_id in models.items()}
    dataset = store_dataset(db_app.extensions["smartsvc"].database, street(), time_zone="Europe/Paris")
    return {"client": db_client, "app": db_app, "operator": operator, "alice": alice, "bob": bob,
            "products": products, "dataset": str(dataset)}


def spots(world: dict[str, Any], product: str = "smart", user: Any = None, **params: Any):
    query = {"lat": HERE[0], "lon": HERE[1], "radius_m": 300, "at": TUESDAY_10,
             "product_id": world["products"].get(product, product), **params}
    query = {k: v for k, v in query.items() if v is not None}
    return world["client"].get("/v1/spots", query_string=query, headers=(user or world["alice"]).headers)


def found(world: dict[str, Any], product: str = "smart", **params: Any) -> list[dict[str, Any]]:
    response = spots(world, product, **params)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["items"]


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["source"]["feature_id"] for item in items]


def problem(response, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    if field is not None:
        assert field in body.get("errors", {}), body
    return body


# --------------------------------------------------------------------------- fit


def test_a_smart_fortwo_gets_the_gap_a_normal_car_does_not(world):
    small, normal = found(world, "smart"), found(world, "golf")

    assert ids(small) == ["gap", "paid", "cleaning", "garage"]
    assert ids(normal) == ["paid", "cleaning", "garage"]
    assert small[0]["spaces_for_vehicle"] == 1 and small[0]["fits"] is True
    assert small[0]["why"][0] == "5.4 m curb holds 1 car of 2.69 m (needs 3.69 m each)"
    assert (small[1]["spaces_for_vehicle"], normal[0]["spaces_for_vehicle"]) == (3, 2)


def test_height_and_weight_limits_keep_vehicles_out(world):
    assert "garage" not in ids(found(world, "van"))  # 2.6 m high, 3.2 t: over both
    assert "garage" not in ids(found(world, "heavy"))  # 1.9 m high fits, 2.8 t does not
    garage = next(item for item in found(world, "golf") if ids([item]) == ["garage"])
    assert garage["why"] == ["lot: only legal limits apply", "height 1.5 m is within the 2 m limit",
                             "weight 1,400 kg is within the 2,500 kg limit", "free parking"]
    assert garage["spaces_for_vehicle"] == 120 and garage["distance_m"] == pytest.approx(150, abs=0.5)


def test_a_product_whose_model_has_no_length_is_refused_naming_the_product(world):
    body = problem(spots(world, "bike"), 422, "product_id")

    assert "length_m" in body["errors"]["product_id"][0]


# --------------------------------------------------------------------------- allowed now


def test_a_maximum_stay_shorter_than_the_stay_excludes_the_spot(world):
    short = found(world, duration_min=60)
    paid = next(item for item in short if ids([item]) == ["paid"])

    assert (paid["max_stay_min"], paid["fee"]) == (120, True)
    assert paid["allowed_until"] == "2025-06-03T12:00:00+02:00"
    assert "paid" not in ids(found(world, duration_min=150))


def test_a_no_parking_window_starting_within_the_stay_excludes_or_limits_the_spot(world):
    within = next(item for item in found(world, duration_min=60) if ids([item]) == ["cleaning"])

    assert within["allowed_until"] == "2025-06-03T11:00:00+02:00"
    assert within["why"][-1] == "free parking until 11:00"
    assert "cleaning" not in ids(found(world, duration_min=61))
    assert "cleaning" not in ids(found(world, at="2025-06-03T11:30:00+02:00", duration_min=15))
    assert "cleaning" in ids(found(world, at="2025-06-04T11:30:00+02:00", duration_min=15))  # a Wednesday


def test_allowed_until_is_in_the_datasets_time_zone_whatever_the_offset_asked_in(world):
    items = found(world, at="2025-06-03T08:00:00Z", duration_min=30)

    assert next(i for i in items if ids([i]) == ["paid"])["allowed_until"] == "2025-06-03T12:00:00+02:00"
    assert next(i for i in items if ids([i]) == ["gap"])["allowed_until"] is None  # free for the next 7 days


@pytest.mark.parametrize("zone", [None, "Mars/Olympus_Mons"])
def test_a_dataset_without_a_usable_time_zone_is_read_in_utc(world, zone):
    store_dataset(world["app"].extensions["smartsvc"].database, street(), time_zone=zone)

    items = found(world, at="2025-06-03T08:00:00Z", duration_min=30)
    assert next(i for i in items if ids([i]) == ["paid"])["allowed_until"] == "2025-06-03T10:00:00+00:00"


def test_residents_only_parking_is_never_offered(world):
    assert "residents" not in ids(found(world, radius_m=1000))


# --------------------------------------------------------------------------- the answer


def test_items_carry_exactly_the_documented_fields_sorted_by_distance(world):
    items = found(world, radius_m=1000)

    assert ids(items) == ["gap", "paid", "cleaning", "garage", "far"]
    assert all(set(item) == ITEM_FIELDS for item in items)
    distances = [item["distance_m"] for item in items]
    assert distances == sorted(distances)
    assert distances[0] == pytest.approx(20.6, abs=0.1)  # 20 m east, 5 m north
    gap = items[0]
    assert gap["id"] == f"{world['dataset']}.0"
    assert gap["source"] == {"dataset": world["dataset"], "feature_id": "gap"}
    assert gap["geometry"]["type"] == "LineString" and len(gap["geometry"]["coordinates"]) == 2
    assert (gap["kind"], gap["orientation"], gap["length_m"], gap["fee"]) == ("curb", "parallel", 5.4, False)


def test_the_answer_is_exactly_what_the_documented_schema_dumps(world):
    # The view answers with the items' JSON without a marshmallow dump: dumping it changes nothing.
    response = spots(world, radius_m=1000)
    body = response.get_json()

    assert len(body["items"]) == 5
    with world["app"].app_context():
        assert json.dumps(SpotsSchema().dump(body)) == json.dumps(body)


def test_the_radius_and_the_limit_bound_the_answer(world):
    assert "far" not in ids(found(world, radius_m=300))
    assert ids(found(world, radius_m=5000, limit=2)) == ["gap", "paid"]
    assert found(world, radius_m=10) == []


def test_at_defaults_to_now_and_extreme_supported_times_are_answered(world):
    assert spots(world, at=None).status_code == 200
    for at in ("1970-01-01T00:00:00+23:59", "2999-12-31T23:59:59-23:59", "2025-03-30T02:30:00+01:00"):
        response = spots(world, at=at, duration_min=10080)
        assert response.status_code == 200, (at, response.get_json())


@pytest.mark.parametrize(("lat", "lon"), [(90, 0), (-90, 180), (0, -180), (0, 180), (48.85, 2.35)])
def test_the_ends_of_the_world_are_answered(world, lat, lon):
    response = spots(world, lat=lat, lon=lon, radius_m=5000, limit=100, duration_min=1)

    assert response.status_code == 200, response.get_json()
    assert len(response.get_json()["items"]) == (5 if (lat, lon) == (48.85, 2.35) else 0)


def test_no_live_parking_layer_gives_no_items(world):
    database = world["app"].extensions["smartsvc"].database
    store_dataset(database, street(), layer="pois")  # another layer's features are never spots
    with database.unit_of_work() as uow:
        live = uow.session.get(LiveLayer, "parking")
        live.dataset_id, live.version = None, live.version + 1
        uow.commit()

    assert found(world, radius_m=5000) == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"lat": 91}, "lat"),
        ({"lat": "nan"}, "lat"),
        ({"lat": None}, "lat"),
        ({"lon": -180.5}, "lon"),
        ({"lon": "east"}, "lon"),
        ({"radius_m": 5001}, "radius_m"),
        ({"radius_m": 0}, "radius_m"),
        ({"product_id": None}, "product_id"),
        ({"product_id": "my-car"}, "product_id"),
        ({"at": "2025-06-03T10:00:00"}, "at"),
        ({"at": "tomorrow"}, "at"),
        ({"at": "3000-01-01T00:00:00Z"}, "at"),
        ({"at": "1969-12-31T23:59:59Z"}, "at"),
        ({"duration_min": 0}, "duration_min"),
        ({"duration_min": 10081}, "duration_min"),
        ({"duration_min": 1.5}, "duration_min"),
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
    ],
)
def test_bad_parameters_are_422_naming_the_field(world, params, field):
    problem(spots(world, **params), 422, field)


# --------------------------------------------------------------------------- who may search


def test_another_users_or_an_unknown_product_is_404(world):
    bob = world["bob"]

    assert problem(spots(world, user=bob), 404)["detail"].startswith("product ")
    assert problem(spots(world, product="0190a3c4-0000-7000-8000-000000000000"), 404)


def test_only_user_tokens_search(world):
    client = world["client"]
    query = {"lat": HERE[0], "lon": HERE[1], "product_id": world["products"]["smart"]}

    assert problem(client.get("/v1/spots", query_string=query), 401)
    assert problem(client.get("/v1/spots", query_string=query, headers=bearer(world["operator"])), 403)


# --------------------------------------------------------------------------- a new publish


@pytest.fixture(params=["index", "auto"])
def republished_world(request, db_settings, backend) -> dict[str, Any]:
    """An app answering with the in-process index (forced, or the default for the backend)."""
    app = make_app(db_settings.replace(spot_search=request.param))
    client = app.test_client()
    operator, app_key = api_key(app, "operator"), api_key(app, "app")
    alice = make_user(client, app_key, "alice")
    product = own(client, alice, add_vehicle_model(client, operator, "fortwo", length_m=2.69, height_m=1.55,
                                                   weight_kg=1095))
    yield {"app": app, "client": client, "alice": alice, "products": {"smart": product}}
    close_app(app)


def test_the_search_follows_every_publish_and_rollback(republished_world):
    world = republished_world
    database = world["app"].extensions["smartsvc"].database
    before = found(world, radius_m=1000)
    first = store_dataset(database, street())
    on_first = found(world, radius_m=1000)
    second = store_dataset(database, [curb(40, 20.0, FREE, "new-curb")])
    on_second = found(world, radius_m=1000)
    publish_dataset(database, first)  # the rollback

    assert before == []
    assert ids(on_first) == ["gap", "paid", "cleaning", "garage", "far"]
    assert [item["id"] for item in on_second] == [f"{second}.0"] and ids(on_second) == ["new-curb"]
    assert [item["id"] for item in found(world, radius_m=1000)] == [item["id"] for item in on_first]


def test_the_answer_does_not_depend_on_earlier_searches(world):
    first = found(world, radius_m=1000, duration_min=90)
    for duration in (15, 60, 150):
        found(world, radius_m=1000, duration_min=duration, at="2025-06-03T10:00:00Z")

    assert found(world, radius_m=1000, duration_min=90) == first


# --------------------------------------------------------------------------- the hot path (smartsvc/http/spots.py)


def _bump_token_generation(world: dict[str, Any]) -> None:
    """What revoking every token of a user does: their generation moves on."""
    from sqlalchemy import text

    with world["app"].extensions["smartsvc"].database.engine.begin() as connection:
        connection.execute(text("UPDATE users SET token_generation = token_generation + 1"))


def test_a_token_revoked_after_a_search_is_refused_at_the_very_next_one(world):
    assert found(world)  # the answer of a warm process: nothing of it may be remembered for the next request
    _bump_token_generation(world)

    refused = problem(spots(world), 401)
    assert refused["detail"] == "access token is no longer valid"
    # 401 comes before anything about the arguments, as on every other endpoint.
    assert problem(spots(world, lat=999), 401)["detail"] == "access token is no longer valid"


def test_a_product_deleted_after_a_search_is_404_at_the_very_next_one(world):
    assert found(world)
    product_id = world["products"]["smart"]
    deleted = world["client"].delete(f"/v1/me/products/{product_id}", headers=world["alice"].headers)
    assert deleted.status_code == 204

    assert f"product {product_id} does not exist" in problem(spots(world), 404)["detail"]


def test_errors_on_the_hot_path_are_those_of_the_documented_path(world):
    # Another user's product, a model without a length, a malformed token, an API key.
    assert problem(spots(world, user=world["bob"]), 404)
    assert problem(spots(world, "bike"), 422, "product_id")
    tampered = world["client"].get("/v1/spots", query_string={"lat": HERE[0], "lon": HERE[1],
                                                               "product_id": world["products"]["smart"]},
                                   headers=bearer(world["alice"].token[:-2] + "xx"))
    assert problem(tampered, 401)
    key = world["client"].get("/v1/spots", query_string={"lat": HERE[0], "lon": HERE[1],
                                                          "product_id": world["products"]["smart"]},
                              headers=bearer(world["operator"]))
    assert problem(key, 403)


@pytest.mark.parametrize("query", [
    {"lat": "48.85", "lon": "2.35"},
    {"lat": " 48.85 ", "lon": "2.35e0", "radius_m": "5000", "limit": "100", "duration_min": "10080"},
    {"lat": "-90", "lon": "180", "at": "2025-06-03T10:00:00Z", "unknown": "ignored"},
    {"lat": "48.85", "lon": "2.35", "at": "2025-06-03T10:00:00.5+02:00"},
    {"lat": "1_0", "lon": "2", "radius_m": "0.5"},
    # Each of these is refused by the schema, so the hot path must not answer them itself.
    {"lat": "nan", "lon": "2.35"}, {"lat": "inf", "lon": "2.35"}, {"lat": "91", "lon": "2.35"},
    {"lon": "2.35"}, {"lat": "48.85", "lon": "2.35", "radius_m": "0"},
    {"lat": "48.85", "lon": "2.35", "limit": "20.0"}, {"lat": "48.85", "lon": "2.35", "limit": "101"},
    {"lat": "48.85", "lon": "2.35", "at": "2025-06-03T10:00:00"},
    {"lat": "48.85", "lon": "2.35", "at": "1969-12-31T10:00:00Z"},
    {"lat": "48.85", "lon": "2.35", "at": ""}, {"lat": "48.85", "lon": "2.35", "product_id": "not-a-uuid"},
    {"lat": "48.85", "lon": "2.35", "note": "a\x00b"},
])
def test_the_hot_path_reads_the_arguments_exactly_as_the_schema_does(query):
    import marshmallow as ma
    from werkzeug.datastructures import MultiDict

    from smartsvc.http.spots import SpotSearchArgs, _fast_args

    query = {"product_id": "0190F2C4-5E2B-7CC1-9A3E-3C1F7D2B9A10", **query}
    try:
        expected = SpotSearchArgs().load({k: v for k, v in query.items() if k in SpotSearchArgs().fields})
    except ma.ValidationError:
        expected = None
    if "\x00" in "".join(query.values()):
        expected = None  # the standard parser answers 422 naming the field
    assert _fast_args(MultiDict(query)) == expected
    # A repeated argument: the first value, as webargs reads it.
    repeated = MultiDict(list(query.items()) + [("lon", "12")])
    assert _fast_args(repeated) == expected
