"""Format detection from the first bytes, and files that are not what they claim to be."""

from __future__ import annotations

import io

import pytest

from geodata.readers import ReadOptions, open_reader
from geodata.readers.detect import check_format, detect_format
from geodata.validate import FormatError

from .conftest import FIXTURES, OneWayStream


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("normalized.geojson", "geojson"),
        ("osm_street.geojson", "osm"),
        ("osm_places.geojson", "osm"),
        ("small_manifest_last.curblr.json", "curblr"),
        ("cds_curbs.json", "cds"),
        ("spots.csv", "csv"),
        ("spots_wkt.csv", "csv"),
    ],
)
def test_each_fixture_is_recognised_from_its_head(name, expected):
    assert detect_format((FIXTURES / name).read_bytes()[:65536]) == expected


def test_the_real_curblr_feed_is_recognised(portland_path):
    assert detect_format(portland_path.read_bytes()[:65536]) == "curblr"


def test_newline_delimited_and_rs_separated_geojson_are_geojson():
    feature = b'{"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}, "properties": {"kind": "space"}}'

    assert detect_format(feature + b"\n" + feature + b"\n") == "geojson"
    assert detect_format(b"\x1e" + feature + b"\n\x1e" + feature) == "geojson"


@pytest.mark.parametrize(
    ("content", "claimed", "message"),
    [
        (b"id,lat,lon\n1,48.85,2.35\n", "curblr", "declared as CurbLR but it looks like CSV"),
        (b'{"type": "FeatureCollection", "features": []}', "csv", "declared as CSV but it looks like GeoJSON"),
        (b'{"type": "FeatureCollection", "features": []}', "cds", "declared as CDS Curbs but it looks like GeoJSON"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "geojson", "the file is binary"),
        (b"", "geojson", "the file is empty"),
        (b"name,street\nA,B\n", "csv", "CSV needs lat and lon, or wkt"),
        (b'{"hello": "world"}', "geojson", "top-level keys hello"),
    ],
)
def test_a_file_that_is_not_what_it_claims_fails_with_a_clear_error(content, claimed, message):
    with pytest.raises(FormatError, match=message):
        open_reader(io.BytesIO(content), claimed)


def test_geojson_and_osm_claims_read_each_others_container():
    head = (FIXTURES / "osm_places.geojson").read_bytes()

    assert check_format(head, "geojson") == "geojson"
    assert check_format(head, "osm") == "osm"


def test_an_unknown_file_without_a_claim_says_what_it_is():
    with pytest.raises(FormatError, match="not a GeoJSON, CSV, OSM, CurbLR or CDS file"):
        open_reader(io.BytesIO(b"just some words\n"))


def test_broken_json_fails_the_file_with_a_clear_error():
    broken = b'{"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}, "properties": {}}, {"type": '
    reader = open_reader(io.BytesIO(broken + b"]]"))

    with pytest.raises(FormatError, match="not valid JSON"):
        list(reader)


def test_detection_does_not_lose_the_head_of_a_non_seekable_stream():
    data = (FIXTURES / "normalized.geojson").read_bytes()

    reader = open_reader(io.BufferedReader(OneWayStream(data)), options=ReadOptions(dataset="paris"))

    assert reader.format == "geojson"
    assert len(list(reader)) == 8
