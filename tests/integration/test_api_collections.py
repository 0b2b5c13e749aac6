"""``/v1/collections``: each layer's live version as GeoJSON, paged by cursor, filtered by bbox, on both databases."""

from __future__ import annotations

from typing import Any

import pytest
from shapely.geometry import LineString, Point, Polygon

from geodata.model import Rule, Spot
from tests.support.factories import api_key, bearer, make_user
from tests.support.geodata import publish_dataset, store_dataset

FREE = (Rule(None, "parking"),)


def grid(rows: int = 5, cols: int = 5) -> list[Spot]:
    """Point spaces 0.001° apart, from (2.350, 48.850); feature ids "r-c"."""
    return [Spot(Point(2.350 + c * 0.001, 48.850 + r * 0.001), kind="space", rules=FREE, source_feature_id=f"{r}-{c}")
            for r in range(rows) for c in range(cols)]


@pytest.fixture
def world(db_app, db_client) -> dict[str, Any]:
    keys = {role: api_key(db_app, role) for role in ("operator", "partner", "app", "agent")}
    user = make_user(db_client, keys["app"], "reader")
    return {"app": db_app, "client": db_client, "database": db_app.extensions["smartsvc"].database,
            "headers": bearer(keys["partner"]), "keys": keys, "user": user}


def get(world: dict[str, Any], path: str, **query: Any):
    return world["client"].get(path, query_string=query, headers=world["headers"])


def all_pages(world: dict[str, Any], layer: str = "parking", **query: Any) -> list[dict[str, Any]]:
    """Every page, following the ``next`` links; checks next_cursor and the link agree."""
    pages = []
    response = get(world, f"/v1/collections/{layer}/items", **query)
    while True:
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        pages.append(body)
        following = [link for link in body["links"] if link["rel"] == "next"]
        if body["next_cursor"] is None:
            assert following == []
            return pages
        assert len(following) == 1 and f"cursor={body['next_cursor']}" in following[0]["href"]
        response = world["client"].get(following[0]["href"], headers=world["headers"])


def feature_ids(pages: list[dict[str, Any]]) -> list[str]:
    return [feature["properties"]["source"]["feature_id"] for page in pages for feature in page["features"]]


def test_collections_list_every_layer_with_its_live_dataset(world):
    empty = get(world, "/v1/collections").get_json()
    dataset = store_dataset(world["database"], grid(), name="Paris spaces")
    listed = get(world, "/v1/collections").get_json()

    assert [c["id"] for c in empty["collections"]] == ["parking", "pois", "geofences"]
    assert all(c["live_dataset"] is None and c["feature_count"] == 0 and c["bbox"] is None
               for c in empty["collections"])
    parking = listed["collections"][0]
    assert parking["live_dataset"]["id"] == str(dataset) and parking["live_dataset"]["name"] == "Paris spaces"
    assert parking["live_dataset"]["time_zone"] == "Europe/Paris"
    assert (parking["version"], parking["feature_count"], parking["itemType"]) == (1, 25, "feature")
    assert parking["bbox"] == pytest.approx([2.350, 48.850, 2.354, 48.854])
    assert parking["extent"]["spatial"]["bbox"] == [parking["bbox"]]
    assert {link["rel"]: link["href"] for link in parking["links"]} == {
        "self": "/v1/collections/parking", "items": "/v1/collections/parking/items"}
    assert get(world, "/v1/collections/parking").get_json() == parking


def test_items_are_the_live_features_in_normalized_properties_page_by_page(world):
    spots = grid()
    dataset = store_dataset(world["database"], spots)

    pages = all_pages(world, limit=10)

    assert [page["numberReturned"] for page in pages] == [10, 10, 5]
    features = [feature for page in pages for feature in page["features"]]
    assert [f["id"] for f in features] == [f"{dataset}.{seq}" for seq in range(25)]
    assert features[7]["type"] == "Feature"
    assert features[7]["geometry"] == {"type": "Point", "coordinates": [2.352, 48.851]}
    assert features[7]["properties"] == {
        "kind": "space", "rules": [{"when": None, "activity": "parking", "access": "public", "max_stay_min": None,
                                    "fee": False}],
        "source": {"dataset": str(dataset), "feature_id": "1-2"}}
    assert pages[0]["type"] == "FeatureCollection"
    assert {link["rel"] for link in pages[0]["links"]} == {"self", "collection", "next"}


def test_a_bbox_selects_what_intersects_it_across_pages(world):
    diagonal = Spot(LineString([(2.3505, 48.8535), (2.3535, 48.8565)]), kind="curb", rules=FREE,
                    source_feature_id="diagonal")
    lot = Spot(Polygon([(2.3494, 48.8494), (2.3504, 48.8494), (2.3504, 48.8504), (2.3494, 48.8504)]), kind="lot",
               rules=FREE, source_feature_id="lot")
    store_dataset(world["database"], [*grid(), diagonal, lot])

    pages = all_pages(world, bbox="2.3505,48.8505,2.3525,48.8525", limit=2)

    assert feature_ids(pages) == ["1-1", "1-2", "2-1", "2-2"]
    assert len(pages) == 2
    assert all("bbox=2.3505" in link["href"] for page in pages for link in page["links"] if link["rel"] != "collection")
    assert feature_ids(all_pages(world, bbox="2.3490,48.8490,2.3500,48.8500")) == ["0-0", "lot"]
    # The diagonal's bounds overlap this box, the line itself passes above it.
    assert feature_ids(all_pages(world, bbox="2.3525,48.8535,2.3535,48.8545")) == ["4-3"]
    assert feature_ids(all_pages(world, bbox="2.3515,48.8545,2.3519,48.8549")) == ["diagonal"]


def test_a_bbox_across_the_antimeridian(world):
    spots = [Spot(Point(lon, 0.5), kind="space", rules=FREE, source_feature_id=str(lon))
             for lon in (179.5, -179.5, 0.0, 178.0)]
    store_dataset(world["database"], spots, layer="pois")

    assert feature_ids(all_pages(world, "pois", bbox="179,-1,-179,1")) == ["179.5", "-179.5"]


def test_a_layer_without_a_live_version_has_no_features(world):
    store_dataset(world["database"], grid(), publish=False)

    pages = all_pages(world, "geofences")
    assert pages[0]["features"] == [] and pages[0]["numberReturned"] == 0
    assert all_pages(world)[0]["features"] == []  # stored but not published: invisible


def test_a_cursor_from_before_a_publish_is_refused(world):
    first = store_dataset(world["database"], grid())
    page = get(world, "/v1/collections/parking/items", limit=5).get_json()
    store_dataset(world["database"], grid(2, 2))

    stale = get(world, "/v1/collections/parking/items", limit=5, cursor=page["next_cursor"])
    assert stale.status_code == 409 and "cursor" in stale.get_json()["errors"]
    publish_dataset(world["database"], first)  # rolled back: the cursor's version is live again
    assert get(world, "/v1/collections/parking/items", limit=5, cursor=page["next_cursor"]).status_code == 200


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"bbox": "2.35,48.85,2.36"}, "bbox"),
        ({"bbox": "a,b,c,d"}, "bbox"),
        ({"bbox": "2.35,48.85,2.36,48.86,0,10"}, "bbox"),
        ({"bbox": "2.35,91,2.36,92"}, "bbox"),
        ({"bbox": "181,0,182,1"}, "bbox"),
        ({"bbox": "2.35,48.86,2.36,48.85"}, "bbox"),
        ({"bbox": " 2.35,48.85,2.36,48.86"}, "bbox"),
        ({"bbox": "2.35,48.85,2.36,1e1"}, "bbox"),
        ({"limit": 501}, "limit"),
        ({"limit": 0}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "AQHqAAAAAAAAAAAAAAAAAAA"}, "cursor"),  # a cursor of another kind of list
    ],
)
def test_bad_parameters_are_422_naming_the_field(world, query, field):
    response = get(world, "/v1/collections/parking/items", **query)

    assert response.status_code == 422, response.get_json()
    assert response.mimetype == "application/problem+json"
    assert field in response.get_json()["errors"]


def test_an_unknown_layer_is_404(world):
    for path in ("/v1/collections/bikes", "/v1/collections/bikes/items"):
        response = get(world, path)
        assert response.status_code == 404 and response.mimetype == "application/problem+json"


def test_any_credential_reads_and_no_credential_does_not(world):
    store_dataset(world["database"], grid())
    client = world["client"]

    for headers in (world["user"].headers, *(bearer(key) for key in world["keys"].values())):
        assert client.get("/v1/collections/parking/items", headers=headers).status_code == 200
        assert client.get("/v1/collections", headers=headers).status_code == 200
    assert client.get("/v1/collections/parking/items").status_code == 401
