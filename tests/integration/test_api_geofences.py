"""Geofences (operator) over HTTP on SQLite and PostgreSQL: CRUD, validation naming each field, limits, paging."""

from __future__ import annotations

import io
import json
import math
import uuid
from typing import Any, Iterator

import pytest
from flask import Flask
from geographiclib.geodesic import Geodesic

from smartsvc.models import GeofenceRecord
from smartsvc.services.geofence_input import GeofenceRejected
from smartsvc.services.geofences import geofence_version, update_geofence
from tests.integration.conftest import close_app
from tests.support.checks import count, problem
from tests.support.factories import api_key, bearer, make_app

BERLIN = (52.52, 13.405)
CIRCLE = {"name": "Dealer Mitte", "center": {"lat": BERLIN[0], "lon": BERLIN[1]}, "radius_m": 150}


def moved(lat: float, lon: float, bearing: float, metres: float) -> tuple[float, float]:
    out = Geodesic.WGS84.Direct(lat, lon, bearing, metres)
    return out["lat2"], out["lon2"]


def square(lat: float, lon: float, half_m: float) -> list[list[float]]:
    """A closed [lon, lat] ring: a square of side 2 × half_m around (lat, lon)."""
    north, _ = moved(lat, lon, 0, half_m)
    _, east = moved(lat, lon, 90, half_m)
    dlat, dlon = north - lat, east - lon
    return [[lon - dlon, lat - dlat], [lon + dlon, lat - dlat], [lon + dlon, lat + dlat], [lon - dlon, lat + dlat],
            [lon - dlon, lat - dlat]]


def ring_of(n: int, lat: float = 52.5, lon: float = 13.4, radius_deg: float = 0.02) -> list[list[float]]:
    """A closed ring of ``n`` distinct positions on an ellipse (``n + 1`` with the closing one)."""
    ring = [[lon + radius_deg * 1.6 * math.cos(2 * math.pi * i / n), lat + radius_deg * math.sin(2 * math.pi * i / n)]
            for i in range(n)]
    return ring + [ring[0]]


def polygon(*rings: list[list[float]]) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": list(rings)}


@pytest.fixture
def make_fence_app(db_settings) -> Iterator[Any]:
    """Build apps on this test's database (SQLite or PostgreSQL) with settings changed."""
    apps: list[Flask] = []

    def build(**changes: Any) -> Flask:
        app = make_app(db_settings.replace(**changes))
        apps.append(app)
        return app

    yield build
    for app in apps:
        close_app(app)


class Operator:
    """An app, its client and an operator key, with the geofence calls."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.client = app.test_client()
        self.headers = bearer(api_key(app, "operator"))

    def create(self, body: dict[str, Any], expect: int = 201, **kwargs: Any) -> Any:
        response = self.client.post("/v1/geofences", json=body, headers={**self.headers, **kwargs.pop("headers", {})},
                                    **kwargs)
        assert response.status_code == expect, response.get_data(as_text=True)[:2000]
        return response

    def patch(self, fence_id: str, body: Any, expect: int = 200) -> Any:
        response = self.client.patch(f"/v1/geofences/{fence_id}", json=body, headers=self.headers)
        assert response.status_code == expect, response.get_data(as_text=True)[:2000]
        return response

    def get(self, fence_id: str, expect: int = 200) -> Any:
        response = self.client.get(f"/v1/geofences/{fence_id}", headers=self.headers)
        assert response.status_code == expect, response.get_data(as_text=True)[:2000]
        return response.get_json()

    def list(self, **query: Any) -> dict[str, Any]:
        response = self.client.get("/v1/geofences", query_string=query, headers=self.headers)
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    def version(self) -> int:
        with self.app.extensions["smartsvc"].database.session() as session:
            return geofence_version(session)


@pytest.fixture
def operator(make_fence_app) -> Operator:
    return Operator(make_fence_app())


# --------------------------------------------------------------------------- create, read, change, delete


def test_a_circle_is_created_read_changed_and_deleted(operator):
    created = operator.create({**CIRCLE, "tag": "dealer", "metadata": {"dealer_id": "B-17"}, "dwell_s": 300,
                               "schedule": "Mo-Fr 08:00-18:00; PH off", "time_zone": "Europe/Berlin",
                               "country": "DE"})
    body = created.get_json()
    fence_id = body["id"]

    assert created.headers["Location"] == f"/v1/geofences/{fence_id}"
    assert body["type"] == "circle" and body["center"] == {"lat": 52.52, "lon": 13.405} and body["radius_m"] == 150
    assert body["geometry"] == {"type": "Point", "coordinates": [13.405, 52.52]}
    assert (body["tag"], body["metadata"], body["dwell_s"], body["hysteresis_m"], body["enabled"]) == (
        "dealer", {"dealer_id": "B-17"}, 300, 20.0, True)
    assert (body["schedule"], body["time_zone"], body["country"]) == ("Mo-Fr 08:00-18:00; PH off", "Europe/Berlin",
                                                                      "DE")
    assert body["vertices"] == 0 and body["notes"] == [] and body["created_by"].startswith("key:")
    assert operator.get(fence_id) == body

    changed = operator.patch(fence_id, {"name": "Dealer Mitte (new)", "tag": None, "hysteresis_m": 5}).get_json()
    assert (changed["name"], changed["tag"], changed["hysteresis_m"]) == ("Dealer Mitte (new)", None, 5.0)
    assert changed["center"] == body["center"] and changed["created_at"] == body["created_at"]
    assert changed["updated_at"] > body["updated_at"]

    assert operator.client.delete(f"/v1/geofences/{fence_id}", headers=operator.headers).status_code == 204
    problem(operator.client.get(f"/v1/geofences/{fence_id}", headers=operator.headers), 404)
    problem(operator.client.delete(f"/v1/geofences/{fence_id}", headers=operator.headers), 404)


def test_a_polygon_with_a_hole_and_a_multipolygon_are_stored_as_given(operator):
    outer, hole = square(*BERLIN, 300), square(*BERLIN, 100)
    holed = operator.create({"name": "ring", "type": "polygon", "geometry": polygon(outer, hole)}).get_json()

    assert holed["type"] == "polygon" and holed["center"] is None and holed["radius_m"] is None
    assert holed["geometry"] == polygon(outer, hole) and holed["vertices"] == 10 and holed["notes"] == []

    other = square(52.53, 13.42, 100)
    multi = {"type": "MultiPolygon", "coordinates": [[outer], [other]]}
    assert operator.create({"name": "two parts", "geometry": multi}).get_json()["geometry"] == multi


def test_an_unclosed_ring_and_a_small_self_intersection_are_repaired_and_noted(operator):
    unclosed = operator.create({"name": "open", "geometry": polygon(square(*BERLIN, 100)[:-1])}).get_json()
    assert unclosed["geometry"]["coordinates"][0][-1] == unclosed["geometry"]["coordinates"][0][0]
    assert [n["field"] for n in unclosed["notes"]] == ["geometry"] and "closed" in unclosed["notes"][0]["message"]

    spike = [[13.40, 52.50], [13.41, 52.50], [13.41, 52.51], [13.405, 52.51], [13.405, 52.515], [13.405, 52.51],
             [13.40, 52.51], [13.40, 52.50]]
    repaired = operator.create({"name": "spike", "geometry": polygon(spike)}).get_json()
    assert any("was repaired" in n["message"] for n in repaired["notes"])
    assert operator.get(repaired["id"])["notes"] == repaired["notes"]


def test_operators_share_one_set_of_geofences(operator):
    fence = operator.create(CIRCLE).get_json()
    colleague = bearer(api_key(operator.app, "operator", "colleague"))

    assert operator.client.get(f"/v1/geofences/{fence['id']}", headers=colleague).status_code == 200
    response = operator.client.patch(f"/v1/geofences/{fence['id']}", json={"name": "renamed"}, headers=colleague)
    assert response.status_code == 200 and response.get_json()["created_by"] == fence["created_by"]


# --------------------------------------------------------------------------- validation


def test_every_wrong_field_is_named_at_once(operator):
    body = problem(operator.create({"name": " ", "center": {"lat": 52.5, "lon": 13.4}, "radius_m": 5,
                                    "schedule": "Mo-Fr 25:00-26:00 nonsense", "time_zone": "Mars/Olympus",
                                    "dwell_s": -1, "hysteresis_m": 501, "country": "ZZ", "enabled": "yes"},
                                   expect=422), 422)

    assert set(body["errors"]) == {"name", "radius_m", "schedule", "time_zone", "dwell_s", "hysteresis_m", "country",
                                   "enabled"}
    assert count(operator.app, GeofenceRecord) == 0


@pytest.mark.parametrize(("radius", "status"), [(9.99, 422), (10, 201), (10_000, 201), (10_000.5, 422), (0, 422),
                                                 (-5, 422), ("100", 422)])
def test_the_radius_is_10_to_10000_metres(operator, radius, status):
    response = operator.create({**CIRCLE, "radius_m": radius}, expect=status)
    if status == 422:
        problem(response, 422, "radius_m")


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "no shape"}, "geometry"),
    ({"name": "no radius", "center": {"lat": 52.5, "lon": 13.4}}, "radius_m"),
    ({"name": "both", **{k: v for k, v in CIRCLE.items() if k != "name"}, "geometry": polygon(square(*BERLIN, 50))},
     "geometry"),
    ({"name": "radius on an area", "geometry": polygon(square(*BERLIN, 50)), "radius_m": 50}, "radius_m"),
    ({**CIRCLE, "type": "polygon"}, "type"),
    ({**CIRCLE, "type": "square"}, "type"),
    ({**CIRCLE, "center": {"lat": 113.4, "lon": 52.5}}, "center.lat"),
    ({**CIRCLE, "center": {"lat": 52.5}}, "center.lon"),
    ({**CIRCLE, "radius": 100}, "radius"),
    ({**CIRCLE, "metadata": [1, 2]}, "metadata"),
    ({**CIRCLE, "metadata": {"blob": "x" * 20_000}}, "metadata"),
    ({**CIRCLE, "tag": ""}, "tag"),
    ({**CIRCLE, "dwell_s": 30.5}, "dwell_s"),
    ({"name": "line", "geometry": {"type": "LineString", "coordinates": [[13.4, 52.5], [13.5, 52.5]]}}, "geometry"),
    ({"name": "point ring", "geometry": polygon([[13.4, 52.5]] * 3)}, "geometry"),
    ({"name": "text", "geometry": polygon([[13.4, 52.5], ["13.5", 52.5], [13.5, 52.6], [13.4, 52.5]])}, "geometry"),
    ({"name": "extra", "geometry": {**polygon(square(*BERLIN, 50)), "crs": "EPSG:4326"}}, "geometry"),
])
def test_a_body_that_is_not_a_geofence_is_422_naming_the_field(operator, body, field):
    problem(operator.create(body, expect=422), 422, field)
    assert count(operator.app, GeofenceRecord) == 0


def test_numbers_json_cannot_carry_are_refused(operator):
    body = '{"name": "n", "center": {"lat": 1, "lon": 2}, "radius_m": 100, "metadata": {"a": NaN, "b": Infinity}}'

    response = operator.client.post("/v1/geofences", data=body, content_type="application/json",
                                    headers=operator.headers)

    problem(response, 422, "metadata")


def test_a_bow_tie_is_rejected_and_says_where_it_crosses_itself(operator):
    bowtie = [[13.40, 52.50], [13.41, 52.51], [13.41, 52.50], [13.40, 52.51], [13.40, 52.50]]

    body = problem(operator.create({"name": "bow tie", "geometry": polygon(bowtie)}, expect=422), 422, "geometry")

    message = body["errors"]["geometry"][0]
    assert "crosses itself" in message and "split it into 2 parts" in message


def test_a_hole_outside_its_polygon_is_rejected(operator):
    outer, stray = square(*BERLIN, 100), square(52.6, 13.5, 50)

    body = problem(operator.create({"name": "stray hole", "geometry": polygon(outer, stray)}, expect=422), 422,
                   "geometry")

    assert "hole lies outside" in body["errors"]["geometry"][0]


def test_swapped_coordinates_and_out_of_range_positions_are_explained(operator):
    swapped = [[lat, lon] for lon, lat in square(35.68, 139.76, 100)]  # Tokyo
    shifted = [[lon + 200, lat] for lon, lat in square(*BERLIN, 100)]

    assert "swapped" in problem(operator.create({"name": "swapped", "geometry": polygon(swapped)}, expect=422),
                                422, "geometry")["detail"]
    assert "longitude" in problem(operator.create({"name": "off", "geometry": polygon(shifted)}, expect=422),
                                  422, "geometry")["detail"]


def test_at_most_10000_vertices_in_a_polygon_and_across_its_parts(operator):
    at_limit = operator.create({"name": "10k", "geometry": polygon(ring_of(9_999))}).get_json()
    assert at_limit["vertices"] == 10_000

    problem(operator.create({"name": "one more", "geometry": polygon(ring_of(10_000))}, expect=422), 422, "geometry")
    parts = {"type": "MultiPolygon", "coordinates": [[ring_of(5_000)], [ring_of(5_000, lat=52.6)]]}
    body = problem(operator.create({"name": "parts", "geometry": parts}, expect=422), 422, "geometry")
    assert "10,002 vertices; the limit is 10,000" in body["errors"]["geometry"][0]


def test_a_polygon_may_span_at_most_two_degrees(operator):
    country = polygon([[5.0, 47.0], [15.0, 47.0], [15.0, 55.0], [5.0, 55.0], [5.0, 47.0]])

    body = problem(operator.create({"name": "Germany", "geometry": country}, expect=422), 422, "geometry")

    assert "at most 2° each way" in body["errors"]["geometry"][0]


def test_a_schedule_must_be_opening_hours_and_holidays_need_a_known_country(operator):
    problem(operator.create({**CIRCLE, "schedule": "weekdays 8 to 6"}, expect=422), 422, "schedule")
    problem(operator.create({**CIRCLE, "schedule": "Mo-Fr 08:00-18:00; PH off", "country": "XX"}, expect=422), 422,
            "country")

    sunday = operator.create({**CIRCLE, "schedule": "Su 10:00-16:00", "time_zone": "Europe/Berlin"}).get_json()
    assert sunday["schedule"] == "Su 10:00-16:00" and sunday["country"] is None


def test_a_fence_outside_the_service_area_is_refused(make_fence_app):
    operator = Operator(make_fence_app(service_area=(2.2, 48.8, 2.5, 48.95)))

    problem(operator.create(CIRCLE, expect=422), 422, "center")
    problem(operator.create({"name": "berlin", "geometry": polygon(square(*BERLIN, 100))}, expect=422), 422,
            "geometry")
    operator.create({**CIRCLE, "center": {"lat": 48.85, "lon": 2.35}})


# --------------------------------------------------------------------------- changes (PATCH)


def test_a_change_of_shape_replaces_the_shape_as_a_whole(operator):
    fence = operator.create(CIRCLE).get_json()
    area = polygon(square(*BERLIN, 200))

    as_area = operator.patch(fence["id"], {"geometry": area}).get_json()
    assert (as_area["type"], as_area["center"], as_area["radius_m"], as_area["geometry"]) == (
        "polygon", None, None, area)

    as_circle = operator.patch(fence["id"], {"type": "circle", "center": {"lat": 52.5, "lon": 13.4},
                                             "radius_m": 80}).get_json()
    assert (as_circle["type"], as_circle["radius_m"], as_circle["vertices"]) == ("circle", 80, 0)


@pytest.mark.parametrize(("change", "field"), [
    ({"center": {"lat": 52.5, "lon": 13.4}}, "radius_m"),
    ({"radius_m": 80}, "center"),
    ({"type": "polygon"}, "type"),
    ({"center": {"lat": 52.5, "lon": 13.4}, "radius_m": 80, "geometry": polygon(square(*BERLIN, 50))}, "geometry"),
    ({"radius_m": 5, "center": {"lat": 52.5, "lon": 13.4}}, "radius_m"),
    ({"geometry": polygon([[13.40, 52.50], [13.41, 52.51], [13.41, 52.50], [13.40, 52.51], [13.40, 52.50]])},
     "geometry"),
    ({"schedule": "every day"}, "schedule"),
    ({"time_zone": None}, "time_zone"),
    ({"name": None}, "name"),
    ({"metadata": None}, "metadata"),
    ({"colour": "red"}, "colour"),
    ({}, "body"),
])
def test_a_change_is_validated_and_a_refused_one_changes_nothing(operator, change, field):
    fence = operator.create({**CIRCLE, "tag": "dealer"}).get_json()
    version = operator.version()

    problem(operator.patch(fence["id"], change, expect=422), 422, field)

    assert operator.get(fence["id"]) == fence
    assert operator.version() == version


def test_a_change_keeps_what_it_does_not_name_and_the_use_case_checks_the_whole_fence(operator):
    fence = operator.create({**CIRCLE, "schedule": "Mo-Fr 08:00-18:00; PH off", "country": "DE",
                             "time_zone": "Europe/Berlin", "tag": "dealer"}).get_json()
    area = polygon(square(*BERLIN, 200))

    changed = operator.patch(fence["id"], {"geometry": area}).get_json()
    assert {k: changed[k] for k in ("name", "schedule", "country", "time_zone", "tag")} == {
        k: fence[k] for k in ("name", "schedule", "country", "time_zone", "tag")}

    # Without the HTTP schema in front (another caller), the merged fence is still validated as a whole.
    container = operator.app.extensions["smartsvc"]
    with pytest.raises(GeofenceRejected) as rejected:
        update_geofence(container.database, container.settings, uuid.UUID(fence["id"]),
                        {"radius_m": 50, "center": {"lat": 52.5, "lon": 13.4}, "geometry": area, "dwell_s": -1})
    assert set(rejected.value.errors) == {"geometry", "dwell_s"}
    assert operator.get(fence["id"]) == changed


def test_unknown_ids_are_404(operator):
    missing = "01234567-89ab-7def-8123-456789abcdef"
    for method in ("get", "patch", "delete"):
        response = operator.client.open(f"/v1/geofences/{missing}", method=method.upper(), json={"name": "x"},
                                        headers=operator.headers)
        problem(response, 404)
    assert operator.client.get("/v1/geofences/not-a-uuid", headers=operator.headers).status_code == 404


# --------------------------------------------------------------------------- lists


def test_the_list_pages_with_a_cursor_and_filters_by_tag_and_enabled(operator):
    ids = [operator.create({**CIRCLE, "name": f"f{i}", "tag": "dealer" if i % 2 else "charger",
                            "enabled": i != 3}).get_json()["id"] for i in range(5)]

    seen, cursor = [], None
    while True:
        page = operator.list(limit=2, **({"cursor": cursor} if cursor else {}))
        assert len(page["items"]) <= 2
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids

    assert [i["id"] for i in operator.list(tag="dealer")["items"]] == [ids[1], ids[3]]
    assert [i["id"] for i in operator.list(tag="dealer", enabled="false")["items"]] == [ids[3]]
    assert operator.list(tag="nothing") == {"items": [], "next_cursor": None}
    problem(operator.client.get("/v1/geofences?cursor=nope", headers=operator.headers), 422, "cursor")
    problem(operator.client.get("/v1/geofences?limit=501", headers=operator.headers), 422, "limit")


def test_a_page_of_large_polygons_stops_early_and_continues(operator, monkeypatch):
    monkeypatch.setattr("smartsvc.services.geofences.MAX_PAGE_VERTICES", 2_500)
    ids = [operator.create({"name": f"big {i}", "geometry": polygon(ring_of(999, lat=52.5 + i * 0.05))}
                           ).get_json()["id"] for i in range(4)]

    first = operator.list(limit=10)
    second = operator.list(limit=10, cursor=first["next_cursor"])

    assert [i["id"] for i in first["items"]] == ids[:2]
    assert [i["id"] for i in second["items"]] == ids[2:] and second["next_cursor"] is None


# --------------------------------------------------------------------------- limits, idempotency, body size


def test_the_number_of_geofences_is_limited_and_a_refused_one_writes_nothing(make_fence_app):
    operator = Operator(make_fence_app(max_geofences=2))
    operator.create(CIRCLE)
    operator.create(CIRCLE)
    version = operator.version()

    body = problem(operator.create(CIRCLE, expect=409), 409, "geofences")

    assert "SMARTSVC_MAX_GEOFENCES" in body["detail"]
    assert count(operator.app, GeofenceRecord) == 2 and operator.version() == version


def test_the_vertices_of_all_geofences_together_are_limited(make_fence_app):
    operator = Operator(make_fence_app(max_geofence_vertices_total=1_500))
    first = operator.create({"name": "a", "geometry": polygon(ring_of(999))}).get_json()

    problem(operator.create({"name": "b", "geometry": polygon(ring_of(999, lat=52.6))}, expect=409), 409, "geometry")
    # Replacing a fence's own polygon counts it once.
    operator.patch(first["id"], {"geometry": polygon(ring_of(1_400))})
    operator.create(CIRCLE)


def test_an_idempotency_key_returns_the_first_geofence(operator):
    first = operator.create(CIRCLE, headers={"Idempotency-Key": "fence-1"})
    again = operator.create(CIRCLE, headers={"Idempotency-Key": "fence-1"})

    assert again.get_json() == first.get_json() and again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == first.headers["Location"]
    assert count(operator.app, GeofenceRecord) == 1
    problem(operator.create({**CIRCLE, "name": "other"}, expect=422, headers={"Idempotency-Key": "fence-1"}), 422,
            "Idempotency-Key")


def test_a_pretty_printed_10000_vertex_polygon_passes_the_app_wide_body_limit(operator):
    text = json.dumps({"name": "big", "geometry": polygon(ring_of(9_999))}, indent=4)
    assert len(text) > operator.app.extensions["smartsvc"].settings.max_body_bytes

    response = operator.client.post("/v1/geofences", data=text, content_type="application/json",
                                    headers=operator.headers)

    assert response.status_code == 201, response.get_data(as_text=True)[:500]
    model = operator.client.post("/v1/catalog/models", headers=operator.headers,
                                 json={"kind": "car", "brand": "b", "name": "x", "attributes": {}, "pad": "x" * 2**20})
    problem(model, 413)


def test_a_body_past_the_geofence_limit_is_413_chunked_or_not(make_fence_app):
    operator = Operator(make_fence_app(max_geofence_body_bytes=4096))
    body = json.dumps({**CIRCLE, "metadata": {"a": "x" * 8000}}).encode()

    problem(operator.client.post("/v1/geofences", data=body, content_type="application/json",
                                 headers=operator.headers), 413)
    chunked = operator.client.post("/v1/geofences", input_stream=io.BytesIO(body),
                                   headers={**operator.headers, "Content-Type": "application/json",
                                            "Transfer-Encoding": "chunked"},
                                   environ_overrides={"wsgi.input_terminated": True})
    problem(chunked, 413)
    assert count(operator.app, GeofenceRecord) == 0


def test_every_change_moves_the_version_counter_and_a_failed_one_does_not(operator):
    start = operator.version()
    fence = operator.create(CIRCLE).get_json()
    operator.patch(fence["id"], {"enabled": False})
    operator.create({"name": "bad"}, expect=422)
    operator.client.delete(f"/v1/geofences/{fence['id']}", headers=operator.headers)
    operator.client.delete(f"/v1/geofences/{fence['id']}", headers=operator.headers)

    assert operator.version() == start + 3
