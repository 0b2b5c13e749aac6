"""Validation: geometry checks and safe repair, unit parsing, limits, messages a person understands."""

from __future__ import annotations

import json

import pytest

from geodata import units
from geodata.readers import ReadOptions, open_reader
from geodata.validate import REPAIRED, GeometryRejected, LimitExceeded, Limits, parse_geometry

LIMITS = Limits()
PARIS = (2.2, 48.8, 2.5, 48.95)


def rejected(geometry, **kw) -> str:
    with pytest.raises(GeometryRejected) as info:
        parse_geometry(geometry, kw.pop("limits", LIMITS), **kw)
    return str(info.value)


def test_a_latitude_out_of_range_is_rejected_with_a_hint_when_the_pair_looks_swapped():
    message = rejected({"type": "Point", "coordinates": [45.52, -122.68]})

    assert message.startswith("latitude -122.68 is out of range (-90 to 90)")
    assert "look swapped" in message
    assert "longitude 200 is out of range" in rejected({"type": "Point", "coordinates": [200, 10]})


def test_swapped_coordinates_are_caught_by_the_service_area():
    message = rejected({"type": "Point", "coordinates": [48.86, 2.35]}, service_area=PARIS)

    assert "latitude and longitude look swapped" in message
    outside = rejected({"type": "Point", "coordinates": [13.40, 52.52]}, service_area=PARIS)
    assert "outside the service area" in outside


def test_geometries_that_are_not_coordinates_are_rejected_clearly():
    assert rejected(None) == "the feature has no geometry"
    assert "not supported" in rejected({"type": "GeometryCollection", "geometries": []})
    assert "not two numbers" in rejected({"type": "Point", "coordinates": ["a", 1]})
    assert "finite" in rejected({"type": "Point", "coordinates": [float("nan"), 1]})
    assert "at least 2 distinct positions" in rejected({"type": "LineString", "coordinates": [[1, 1], [1, 1]]})
    assert "at least 4 positions" in rejected({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [0, 0]]]})


def test_an_unclosed_ring_is_closed_and_counted_as_repaired():
    geom, notes = parse_geometry({"type": "Polygon", "coordinates": [[[0, 0], [0.001, 0], [0.001, 0.001]]]}, LIMITS)

    assert geom.is_valid and geom.geom_type == "Polygon"
    assert notes[0][0] == REPAIRED


def test_a_polygon_with_a_spike_is_repaired_with_make_valid():
    spike = [[0, 0], [0.01, 0], [0.01, 0.01], [0.005, 0.01], [0.005, 0.015], [0.005, 0.01], [0, 0.01], [0, 0]]

    geom, notes = parse_geometry({"type": "Polygon", "coordinates": [spike]}, LIMITS)

    assert geom.is_valid and geom.area == pytest.approx(1e-4)
    assert notes == [(REPAIRED, notes[0][1])] and "repaired" in notes[0][1]


def test_a_bow_tie_polygon_is_rejected_because_repair_would_split_it():
    bowtie = [[0, 0], [0.001, 0.001], [0.001, 0], [0, 0.001], [0, 0]]

    message = rejected({"type": "Polygon", "coordinates": [bowtie]})

    assert "the boundary crosses itself near latitude 0.000500, longitude 0.000500" in message
    assert "split it into 2 parts" in message


def test_multi_part_geometries_keep_their_largest_part_only_when_allowed():
    multi = {"type": "MultiPolygon", "coordinates": [
        [[[0, 0], [0.001, 0], [0.001, 0.001], [0, 0]]],
        [[[1, 1], [1.01, 1], [1.01, 1.01], [1, 1]]],
    ]}

    assert "split it into Polygons" in rejected(multi)
    geom, notes = parse_geometry(multi, LIMITS, allow_multi=True)
    assert geom.bounds[0] == 1 and "only the largest part" in notes[-1][1]


def test_the_vertex_limit_rejects_one_geometry():
    line = {"type": "LineString", "coordinates": [[i * 1e-5, 0] for i in range(11)]}

    assert rejected(line, limits=Limits(max_vertices=10)) == "LineString has 11 vertices; the limit is 10"


def test_units_give_messages_a_person_understands():
    assert units.parse_length_m("2.2") == 2.2
    assert units.parse_length_m("2.2 m") == 2.2
    assert units.parse_length_m("220 cm") == pytest.approx(2.2)
    assert units.parse_length_m("7'6\"") == pytest.approx(2.286)
    assert units.parse_length_m("none") is None
    assert units.parse_weight_kg("3.5") == 3500
    assert units.parse_weight_kg("7500 kg") == 7500
    assert units.parse_duration_min("2 h") == 120
    assert units.parse_duration_min("90 min") == 90
    assert units.parse_duration_min("01:30") == 90
    assert units.parse_power_kw("22 kW;11 kW") == 22
    with pytest.raises(units.UnitError, match=r"^'2,2 m' is not a number in metres$"):
        units.parse_length_m("2,2 m")
    with pytest.raises(units.UnitError, match="not a duration"):
        units.parse_duration_min("a while")


def _collection(n: int, properties: dict | None = None) -> bytes:
    features = [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [2.35 + i * 1e-5, 48.85]},
         "properties": properties or {"kind": "space", "rules": [{"activity": "parking"}]}}
        for i in range(n)
    ]
    return json.dumps({"type": "FeatureCollection", "features": features}).encode()


def test_a_file_past_the_feature_limit_fails_as_a_whole(tmp_path):
    path = tmp_path / "big.geojson"
    path.write_bytes(_collection(6))

    with open(path, "rb") as fp, pytest.raises(LimitExceeded, match="more than 5 features"):
        list(open_reader(fp, options=ReadOptions(limits=Limits(max_features=5))))


def test_properties_nested_too_deeply_reject_that_feature_only(tmp_path):
    deep: dict = {"kind": "space", "rules": [{"activity": "parking"}]}
    cursor = deep
    for _ in range(10):
        cursor["x"] = {}
        cursor = cursor["x"]
    doc = json.loads(_collection(2))
    doc["features"][0]["properties"] = deep
    path = tmp_path / "deep.geojson"
    path.write_text(json.dumps(doc))

    with open(path, "rb") as fp:
        results = list(open_reader(fp, options=ReadOptions(limits=Limits(max_depth=8))))

    assert [r.rejected for r in results] == [True, False]
    assert results[0].issues[0].code == "limit" and "the limit is 8" in results[0].issues[0].message
