"""Spot search end to end: nearest spots the vehicle fits and may park at, with every API field."""

from __future__ import annotations

import json
import random
from datetime import datetime

import pytest
from geographiclib.geodesic import Geodesic
from shapely.geometry import LineString, MultiPolygon, Point, Polygon

from geodata.allowed import evaluate
from geodata.fit import fit
from geodata.index import SpotIndex
from geodata.model import Rule, Spot, Vehicle
from geodata.answer_json import answer_json
from geodata.search import find_spots, search, to_dicts

WGS84 = Geodesic.WGS84
HERE = (48.8500, 2.3500)
SMART = Vehicle(2.69, 1.66, 1.55, 900)
GOLF = Vehicle(4.5, 1.8, 1.5, 1400)
VAN = Vehicle(5.4, 2.0, 2.5, 3200)
TUESDAY_10 = datetime(2024, 7, 2, 10, 0)
FREE = (Rule(None, "parking"),)
PAID = (Rule("Mo-Sa 09:00-20:00", "parking", "public", 120, True), Rule(None, "parking"))


def east(metres: float, north: float = 0.0) -> tuple[float, float]:
    """(lon, lat) so many metres east (and north) of HERE."""
    p = WGS84.Direct(HERE[0], HERE[1], 90, metres)
    q = WGS84.Direct(p["lat2"], p["lon2"], 0, north) if north else p
    return q["lon2"], q["lat2"]


def curb_at(metres: float, length: float, rules, fid: str, **kw) -> Spot:
    a, b = east(metres, 5), east(metres + length, 5)
    return Spot(LineString([a, b]), kind="curb", orientation=kw.pop("orientation", "parallel"), length_m=length,
                rules=rules, source_dataset=kw.pop("dataset", "paris"), source_feature_id=fid, **kw)


@pytest.fixture(scope="module")
def index() -> SpotIndex:
    spots = [
        curb_at(10, 8.0, (Rule(None, "loading"),), "loading-zone"),
        curb_at(20, 5.4, FREE, "short-gap"),
        curb_at(60, 12.0, PAID, "paid-curb"),
        Spot(Polygon([east(100, 0), east(140, 0), east(140, 30), east(100, 30)]), kind="lot",
             max_vehicle_height_m=2.0, capacity=200, rules=FREE, source_dataset="paris", source_feature_id="garage"),
        curb_at(400, 30.0, FREE, "far-away"),
    ]
    return SpotIndex(spots, timezones={"paris": "Europe/Paris"})


def ids(results) -> list[str]:
    return [r.id for r in results]


def test_a_small_car_gets_the_short_gap_that_a_normal_car_does_not(index):
    small = search(index, *HERE, 300, SMART, TUESDAY_10, 60)
    normal = search(index, *HERE, 300, GOLF, TUESDAY_10, 60)

    assert ids(small) == ["short-gap", "paid-curb", "garage"]
    assert ids(normal) == ["paid-curb", "garage"]
    assert small[0].spaces_for_vehicle == 1
    assert small[1].spaces_for_vehicle == 3 and normal[0].spaces_for_vehicle == 2


def test_results_are_sorted_by_geodesic_distance_to_the_nearest_point(index):
    results = search(index, *HERE, 300, SMART, TUESDAY_10, 60)

    assert [round(r.distance_m) for r in results] == [21, 60, 100]
    assert results == sorted(results, key=lambda r: r.distance_m)


def test_a_tall_van_is_kept_out_of_the_garage_and_a_long_stay_out_of_the_paid_curb(index):
    assert "garage" not in ids(search(index, *HERE, 300, VAN, TUESDAY_10, 60))
    assert ids(search(index, *HERE, 300, SMART, TUESDAY_10, 180)) == ["short-gap", "garage"]


def test_the_radius_and_the_limit_are_respected(index):
    assert "far-away" not in ids(search(index, *HERE, 300, SMART, TUESDAY_10, 60))
    assert "far-away" in ids(search(index, *HERE, 1000, SMART, TUESDAY_10, 60))
    assert ids(search(index, *HERE, 1000, SMART, TUESDAY_10, 60, limit=2)) == ["short-gap", "paid-curb"]


def test_each_item_carries_every_field_of_the_api(index):
    item = search(index, *HERE, 300, SMART, TUESDAY_10, 60)[1].to_dict()

    assert set(item) == {"id", "geometry", "distance_m", "kind", "orientation", "length_m", "fits",
                         "spaces_for_vehicle", "allowed_until", "max_stay_min", "fee", "why", "source"}
    assert item["id"] == "paid-curb" and item["geometry"]["type"] == "LineString"
    assert (item["kind"], item["orientation"], item["length_m"], item["fits"]) == ("curb", "parallel", 12.0, True)
    assert item["allowed_until"] == "2024-07-02T12:00:00+02:00"
    assert (item["max_stay_min"], item["fee"]) == (120, True)
    assert item["why"] == ["12 m curb holds 3 cars of 2.69 m (needs 3.69 m each)",
                           "paid parking until 20:00, max stay 120 min"]
    assert item["source"] == {"dataset": "paris", "feature_id": "paid-curb"}


def test_each_dataset_is_evaluated_in_its_own_time_zone():
    opening = (Rule("Mo-Fr 08:00-18:00", "parking"),)
    spots = [Spot(Point(2.35, 48.85), kind="lot", rules=opening, source_dataset="paris", source_feature_id="p"),
             Spot(Point(2.3501, 48.85), kind="lot", rules=opening, source_dataset="la", source_feature_id="l")]
    index = SpotIndex(spots, timezones={"paris": "Europe/Paris", "la": "America/Los_Angeles"})
    at = datetime.fromisoformat("2024-07-02T16:30:00+00:00")  # 18:30 in Paris, 09:30 in Los Angeles

    assert ids(search(index, 48.85, 2.35, 100, SMART, at, 30)) == ["l"]


@pytest.mark.parametrize("seed", range(2))
def test_search_equals_fit_and_allowed_now_applied_one_by_one(seed):
    rng = random.Random(seed)
    templates = [FREE, PAID, (Rule(None, "no_stopping"),), (Rule("Mo-Fr 07:00-09:00", "no_parking"), Rule(None, "parking", max_stay_min=240))]
    spots = []
    for i in range(1500):
        lon, lat = 2.34 + rng.uniform(0, 0.02), 48.84 + rng.uniform(0, 0.02)
        geom = rng.choice([Point(lon, lat), LineString([(lon, lat), (lon + 1e-4, lat)])])
        spots.append(Spot(geom, kind=rng.choice(["curb", "space", "lot"]),
                          orientation=rng.choice(["parallel", "perpendicular", None]),
                          length_m=rng.choice([None, rng.uniform(3, 15)]),
                          max_vehicle_height_m=rng.choice([None, 1.9, 2.2]),
                          capacity=rng.choice([None, 2, 10]), rules=rng.choice(templates), source_feature_id=str(i)))
    index = SpotIndex(spots, default_timezone="Europe/Paris")
    for _ in range(15):
        lat, lon = 48.84 + rng.uniform(0, 0.02), 2.34 + rng.uniform(0, 0.02)
        vehicle = rng.choice([SMART, GOLF, VAN])
        at = datetime(2024, 7, rng.randint(1, 7), rng.randint(0, 23), 15)
        duration = rng.choice([30, 90, 300])
        got = [(r.id, r.spaces_for_vehicle) for r in search(index, lat, lon, 400, vehicle, at, duration, limit=20)]
        expected = []
        for pos in index.query(lat, lon, 400).positions.tolist():
            spot = index.spots[pos]
            fitted = fit(spot, vehicle)
            if fitted.fits and evaluate(spot.rules, at, duration, "Europe/Paris").allowed:
                expected.append((index.ids[pos], fitted.spaces_for_vehicle))
        assert got == expected[:20]


def test_a_fitting_spot_behind_many_unsuitable_nearer_ones_is_still_found():
    too_short = [curb_at(5 + i, 3.0, FREE, f"tiny-{i}") for i in range(150)]
    index = SpotIndex([*too_short, curb_at(250, 6.0, FREE, "the-one")], default_timezone="Europe/Paris")

    assert ids(search(index, *HERE, 300, SMART, TUESDAY_10, 60, limit=3)) == ["the-one"]


def test_to_dicts_gives_what_to_dict_gives_for_every_kind_of_geometry():
    ring = [east(0, 50), east(40, 50), east(40, 80), east(0, 80), east(0, 50)]
    hole = [east(10, 60), east(20, 60), east(20, 70), east(10, 60)]
    spots = [
        curb_at(10, 8.0, FREE, "line"),
        curb_at(30, 12.0, FREE, "bent", orientation="perpendicular"),
        Spot(Point(*east(5, 10)), kind="space", length_m=5, rules=PAID, source_dataset="paris",
             source_feature_id="point"),
        Spot(Polygon(ring), kind="lot", capacity=30, rules=FREE, source_dataset="paris", source_feature_id="lot"),
        Spot(Polygon(ring, [hole]), kind="lot", capacity=20, rules=FREE, source_dataset="paris",
             source_feature_id="holed"),
        Spot(MultiPolygon([Polygon(ring), Polygon([east(60, 50), east(70, 50), east(70, 60), east(60, 50)])]),
             kind="lot", capacity=10, rules=FREE, source_dataset="paris", source_feature_id="multi"),
        Spot(LineString([(*east(50, 5), 35.0), (*east(58, 5), 35.0)]), kind="curb", orientation="parallel",
             length_m=8.0, rules=FREE, source_dataset="paris", source_feature_id="with-z"),
    ]
    index = SpotIndex(spots, timezones={"paris": "Europe/Paris"})
    results = search(index, *HERE, 300, SMART, TUESDAY_10, 60, limit=20)

    assert len(results) == len(spots)
    assert json.dumps(to_dicts(results)) == json.dumps([r.to_dict() for r in results])
    assert to_dicts([]) == []
    # The fit reasons are kept per spot and vehicle on the index, and stay right for another vehicle.
    assert index.fit_reasons
    assert [r.why for r in search(index, *HERE, 300, GOLF, TUESDAY_10, 60, limit=20)] == [
        [*fit(r.spot, GOLF).reasons, *r.decision.why] for r in search(index, *HERE, 300, GOLF, TUESDAY_10, 60,
                                                                         limit=20)]


def test_the_answer_as_json_text_is_the_answer_as_dicts_for_every_kind_of_geometry_and_vehicle():
    ring = [east(0, 50), east(40, 50), east(40, 80), east(0, 80), east(0, 50)]
    spots = [
        curb_at(10, 8.0, FREE, "line"),
        curb_at(20, 5.4, PAID, "paid-gap"),
        curb_at(40, 9.0, (Rule(None, "parking", max_stay_min=30),), "short-stay"),
        Spot(Point(*east(5, 10)), kind="space", length_m=5, rules=PAID, source_dataset="paris",
             source_feature_id="point"),
        Spot(Polygon(ring), kind="lot", capacity=30, rules=FREE, source_dataset="paris", source_feature_id="lot"),
        Spot(LineString([(*east(50, 5), 35.0), (*east(58, 5), 35.0)]), kind="curb", orientation="parallel",
             length_m=8.0, rules=FREE, source_dataset="paris", source_feature_id="with-z ü"),
        # Written field by field on a first answer: holes, multi-parts, no kind, quotes and controls in ids.
        Spot(Polygon(ring, [[east(10, 60), east(20, 60), east(20, 70), east(10, 60)]]), kind="lot", capacity=20,
             rules=FREE, source_dataset="paris", source_feature_id='holed "lot"\n\t'),
        Spot(MultiPolygon([Polygon([east(60, 50), east(70, 50), east(70, 60), east(60, 50)])]), capacity=3,
             rules=FREE, source_dataset="paris", source_feature_id="multi \\ ⛽"),
        Spot(Point(*east(12, 14)), kind="space", orientation="perpendicular", length_m=4.75, rules=FREE,
             source_dataset="paris", source_feature_id=None),
    ]
    index = SpotIndex(spots, timezones={"paris": "Europe/Paris"})
    answered = set()
    for vehicle, at, duration in [(SMART, TUESDAY_10, 60), (GOLF, TUESDAY_10, 60), (SMART, TUESDAY_10, 20),
                                  (GOLF, datetime(2024, 7, 7, 10, 0), 600), (SMART, TUESDAY_10, 60)]:
        results = search(index, *HERE, 300, vehicle, at, duration, limit=20)
        assert results
        answered.update(r.spot.source_feature_id for r in results)
        # The same document as the answer's dicts: fields in the same order, same numbers.
        assert _document(answer_json(results)) == _document(json.dumps({"items": to_dicts(results)}))
        assert _document(answer_json(list(results))) == _document(answer_json(results))  # not known as one search
        # The same search as columns, read when needed: the same results, the same text.
        found = find_spots(index, *HERE, 300, vehicle, at, duration, limit=20)
        assert [r.to_dict() for r in found] == [r.to_dict() for r in results] == [r.to_dict() for r in found[:]]
        assert [r.id for r in found[1:3]] == [r.id for r in results[1:3]] and found[-1].id == results[-1].id
        assert answer_json(found) == answer_json(results)
        mixed = results[:3] + search(index, *HERE, 300, VAN, at, duration, limit=3)  # two vehicles
        assert _document(answer_json(mixed)) == _document(json.dumps({"items": to_dicts(mixed)}))
        results.reverse()  # changed after the search: answered as it is now, not as it was found
        assert _document(answer_json(results)) == _document(json.dumps({"items": to_dicts(results)}))
    assert answered == {spot.source_feature_id for spot in spots}
    assert json.loads(answer_json([])) == {"items": []}


def _document(text: str) -> list:
    """A JSON text as nested (name, value) pairs: equal when the fields, their order and the values are."""
    return json.loads(text, object_pairs_hook=list)


def test_the_answer_stays_right_when_its_kept_pieces_are_dropped(monkeypatch):
    import geodata.answer_json as pieces

    monkeypatch.setattr(pieces, "_SPOTS_MAX", 2)
    monkeypatch.setattr(pieces, "_VEHICLES_MAX", 1)
    spots = [curb_at(10 + 12 * i, 8.0 + i, PAID if i % 2 else FREE, f"gap-{i}") for i in range(6)]
    index = SpotIndex(spots, timezones={"paris": "Europe/Paris"})
    for vehicle, at in [(SMART, TUESDAY_10), (GOLF, TUESDAY_10), (SMART, datetime(2024, 7, 7, 22, 0)),
                        (VAN, TUESDAY_10), (SMART, TUESDAY_10)]:
        results = search(index, *HERE, 300, vehicle, at, 90, limit=20)
        assert len(results) > 2
        assert _document(answer_json(results)) == _document(json.dumps({"items": to_dicts(results)}))
        assert len(index.item_json) <= len(results) and len(index.fit_json) == 1
