"""GeoJSON and CSV in the normalized names: spots, per-feature issues, and streaming."""

from __future__ import annotations

import io
import json

import pytest

from geodata.model import Rate, Rule
from geodata.readers import ReadOptions, open_reader

from .conftest import FIXTURES, OneWayStream, by_id, read_all

PARIS = (2.2, 48.8, 2.5, 48.95)


def test_normalized_geojson_gives_spots_and_rejects_bad_features_one_by_one():
    reader, results = read_all("normalized.geojson", dataset="paris", service_area=PARIS)
    found = by_id(results)

    gap = found["gap-short"].spots[0]
    assert (gap.kind, gap.orientation, gap.length_m, gap.name) == ("curb", "parallel", 5.4, "Short gap")
    assert gap.rules[0] == Rule("Mo-Sa 09:00-20:00", "parking", "public", 120, True, Rate(2.5, 60, "EUR"))
    assert gap.rules[1] == Rule(None, "parking", "public", None, False)
    assert (gap.source_dataset, gap.source_feature_id) == ("paris", "gap-short")
    assert found["bay"].spots[0].max_vehicle_height_m == 2.1
    assert reader.stats.features == 8 and reader.stats.spots == 4
    assert reader.stats.rejected == 4 and reader.stats.repaired == 1


def test_each_rejected_feature_says_which_field_is_wrong_in_words():
    _, results = read_all("normalized.geojson", dataset="paris", service_area=PARIS)
    found = by_id(results)

    height = found["bad-height"].issues[0]
    assert (height.feature, height.field) == ("bad-height", "max_vehicle_height_m")
    assert height.message == "max_vehicle_height_m '2,2 m' is not a number in metres"
    messages = [i.message for i in found["bad-rule"].issues]
    assert "when 'Mo-Fr 8-18h' is not valid opening_hours syntax (error at character 7)" in messages
    assert any("'dancing' is not one of parking, no_parking, no_stopping, loading" in m for m in messages)
    assert "look swapped" in found["swapped"].issues[0].message
    assert "crosses itself" in found["bowtie"].issues[0].message
    assert found["unclosed"].repaired and found["unclosed"].spots[0].capacity == 30


def test_a_spot_without_rules_is_kept_with_a_warning_that_it_is_never_offered():
    _, results = read_all("normalized.geojson", dataset="paris")
    charger = by_id(results)["no-rules"]

    assert charger.spots[0].rules == ()
    assert charger.spots[0].connectors == ("type2",) and charger.spots[0].power_kw == 22
    assert charger.issues[0].level == "warning" and "never offered" in charger.issues[0].message


def test_csv_with_lat_lon_columns_reads_rules_from_json_and_units_from_text():
    _, results = read_all("spots.csv", dataset="paris")
    found = by_id(results)

    c1 = found["c1"].spots[0]
    assert c1.geometry.coords[0] == (2.35, 48.85)
    assert c1.rules == (Rule("Mo-Sa 09:00-20:00", "parking", "public", 120, True),)
    assert found["c2"].spots[0].max_vehicle_height_m == pytest.approx(2.286)
    assert found["c3"].issues[0].message == "lat 'not-a-number' is not a number in decimal degrees"
    assert "rules is not valid JSON" in found["c4"].issues[0].message


def test_csv_with_a_wkt_column_and_semicolons_gives_curbs_with_their_geodesic_length():
    _, results = read_all("spots_wkt.csv")
    found = by_id(results)

    assert found["w1"].spots[0].kind == "curb"
    assert found["w1"].spots[0].length_m == pytest.approx(7.34, abs=0.01)
    assert "is not valid WKT" in found["w2"].issues[0].message


def _big_collection(n: int) -> bytes:
    feature = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [2.35, 48.85]},
               "properties": {"kind": "space", "name": "x" * 200, "rules": [{"activity": "parking"}]}}
    return json.dumps({"type": "FeatureCollection", "features": [feature] * n}).encode()


def test_geojson_is_streamed_the_first_spot_comes_before_the_file_is_read():
    stream = OneWayStream(_big_collection(5000))

    results = iter(open_reader(io.BufferedReader(stream)))
    first = next(results)

    assert first.spots and stream.consumed < stream.size / 4
    assert sum(1 for _ in results) == 4999


def test_csv_is_streamed_too():
    rows = "id,lat,lon,kind,rules\n" + "".join(f'{i},48.85,2.35,space,"[{{""activity"": ""parking""}}]"\n' for i in range(20000))
    stream = OneWayStream(rows.encode())

    results = iter(open_reader(io.BufferedReader(stream), "csv", ReadOptions()))
    assert next(results).spots
    assert stream.consumed < stream.size / 4


def test_feature_sequences_are_read_feature_by_feature():
    feature = b'{"type": "Feature", "id": "a", "geometry": {"type": "Point", "coordinates": [2.35, 48.85]}, "properties": {"kind": "space", "rules": [{"activity": "parking"}]}}'

    results = list(open_reader(io.BytesIO(b"\x1e" + feature + b"\n\x1e" + feature + b"\n")))

    assert [r.feature_id for r in results] == ["a", "a"] and all(r.spots for r in results)


def test_a_single_feature_document_is_one_spot():
    data = (FIXTURES / "normalized.geojson").read_text()
    single = json.dumps(json.loads(data)["features"][0]).encode()

    results = list(open_reader(io.BytesIO(single), "geojson"))

    assert len(results) == 1 and results[0].spots[0].length_m == 5.4


def test_the_reader_reports_how_far_it_has_read_for_progress_bars(tmp_path):
    path = tmp_path / "many.geojson"
    path.write_bytes(_big_collection(5000))

    with open(path, "rb") as fp:
        reader = open_reader(fp)
        seen = [reader.position() for _ in zip(range(10), reader)]
        for _ in reader:
            pass
        assert 0 < seen[-1] < path.stat().st_size / 2
        assert reader.position() == path.stat().st_size
