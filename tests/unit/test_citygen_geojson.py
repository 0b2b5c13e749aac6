"""The benchmark city's GeoJSON file: exactly what ``json`` makes of each spot's ``to_feature()``."""

from __future__ import annotations

import dataclasses
import json

from shapely.geometry import LineString, Point, Polygon

from bench import city_geojson, citygen
from bench.citygen import City


def _reference_text(spots) -> str:
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    return ",\n".join(dumps(spot.to_feature()) for spot in spots)


def test_the_file_is_the_features_as_json_would_write_them(tmp_path, monkeypatch):
    monkeypatch.setattr(citygen, "CHUNK", 700)  # several chunks, the last one short
    city = City(2_000)
    path = tmp_path / "city.geojson"

    size = city.write_geojson(path)

    spots = [spot for k in range(city.chunk_count()) for spot in city.chunk(k)]
    expected = '{"type":"FeatureCollection","features":[\n' + _reference_text(spots) + "\n]}\n"
    text = path.read_text(encoding="utf-8")
    assert text == expected and size == len(text.encode("utf-8"))
    assert {f["geometry"]["type"] for f in json.loads(text)["features"]} == {"Point", "LineString", "Polygon"}


def test_shapes_the_city_does_not_generate_are_still_written_exactly():
    spot = City(50).chunk(0)[0]
    shapes = [Point(13.4, 52.5, 3.0), Point(), Polygon([(0, 0), (4, 0), (4, 4), (0, 0)], [[(1, 1), (2, 1), (1, 2)]]),
              LineString([(13.1, 52.1), (13.2, 52.200000000000003)])]
    spots = [dataclasses.replace(spot, geometry=g) for g in shapes]

    assert ",\n".join(city_geojson._feature_lines(spots, {})) == _reference_text(spots)
