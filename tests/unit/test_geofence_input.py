"""Geofence input without a database: defaults, the fields named in a refusal, and how a change merges."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartsvc.services.geofence_input import GeofenceRejected, holiday_countries, validate_geofence
from smartsvc.services.geofences import merge_changes

CIRCLE = {"name": "shop", "center": {"lat": 52.52, "lon": 13.405}, "radius_m": 150}
AREA = {"type": "Polygon", "coordinates": [[[13.40, 52.51], [13.41, 52.51], [13.41, 52.52], [13.40, 52.52],
                                            [13.40, 52.51]]]}


def rejected(fields: dict) -> dict[str, list[str]]:
    with pytest.raises(GeofenceRejected) as info:
        validate_geofence(fields)
    assert info.value.status == 422
    return info.value.errors


def test_absent_optional_fields_take_their_defaults():
    valid = validate_geofence({**CIRCLE, "name": "  shop  "})

    assert (valid.kind, valid.radius_m, valid.vertices, valid.notes) == ("circle", 150, 0, [])
    assert valid.geometry == {"type": "Point", "coordinates": [13.405, 52.52]}
    assert valid.fields == {"name": "shop", "tag": None, "metadata": {}, "schedule": None, "time_zone": "UTC",
                            "country": None, "dwell_s": None, "enabled": True, "hysteresis_m": 20.0}


def test_an_area_is_stored_as_plain_json_lists():
    valid = validate_geofence({"name": "area", "geometry": AREA})

    assert valid.kind == "polygon" and valid.geometry == AREA and valid.vertices == 5


def test_every_field_the_library_or_the_limits_refuse_is_named_in_api_terms():
    errors = rejected({"name": "x", "center": {"lat": 52.5, "lon": 13.4}, "radius_m": 5, "time_zone": "Mars/X",
                       "schedule": "Mo-Fr 08:00-18:00", "dwell_s": 1.5, "metadata": {str(i): i for i in range(101)},
                       "enabled": None, "colour": "red"})

    assert set(errors) == {"radius_m", "time_zone", "dwell_s", "metadata", "enabled", "colour"}


def test_a_shape_is_one_circle_or_one_area():
    assert set(rejected({"name": "none"})) == {"geometry"}
    assert set(rejected({**CIRCLE, "geometry": AREA})) == {"geometry"}
    assert set(rejected({"name": "a", "geometry": AREA, "radius_m": 20})) == {"radius_m"}
    assert set(rejected({**CIRCLE, "type": "polygon"})) == {"type"}
    assert set(rejected({"name": "c", "type": "circle"})) == {"center"}


def test_a_huge_polygon_is_refused_before_any_geometry_is_built():
    ring = [[13.4 + i * 1e-6, 52.5] for i in range(20_000)]

    assert "20,000 vertices" in rejected({"name": "huge", "geometry": {"type": "Polygon",
                                                                          "coordinates": [ring]}})["geometry"][0]


def test_the_countries_with_known_holidays_are_iso_codes():
    countries = holiday_countries()

    assert {"DE", "FR", "US", "GB"} <= set(countries) and "ZZ" not in countries
    assert all(len(code) == 2 and code.isupper() for code in countries)


def test_a_change_of_shape_replaces_the_stored_shape_and_keeps_the_rest():
    stored = {**CIRCLE, "tag": "dealer", "schedule": None}

    assert merge_changes(stored, {"geometry": AREA}) == {"name": "shop", "tag": "dealer", "schedule": None,
                                                         "geometry": AREA}
    assert merge_changes(stored, {"tag": None})["center"] == CIRCLE["center"]
    for partial, missing in (({"center": {"lat": 1, "lon": 2}}, "radius_m"), ({"radius_m": 20}, "center"),
                             ({"type": "circle"}, "type")):
        with pytest.raises(GeofenceRejected) as info:
            merge_changes(stored, partial)
        assert set(info.value.errors) == {missing}


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                     lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=5), children,
                                                                                      max_size=5),
                     max_leaves=30)
_FIELD_VALUES = {
    "name": st.one_of(st.text(max_size=10), _JSON), "type": st.sampled_from(["circle", "polygon", "x"]),
    "center": st.one_of(st.fixed_dictionaries({"lat": st.floats(-100, 100), "lon": st.floats(-200, 200)}), _JSON),
    "radius_m": st.one_of(st.floats(0, 20_000), _JSON),
    "geometry": st.one_of(st.fixed_dictionaries({
        "type": st.sampled_from(["Polygon", "MultiPolygon", "Point"]),
        "coordinates": st.lists(st.lists(st.lists(st.floats(-200, 200), min_size=2, max_size=3), max_size=6),
                                max_size=3)}), _JSON),
    **{name: _JSON for name in ("tag", "metadata", "schedule", "time_zone", "country", "dwell_s", "hysteresis_m",
                                "enabled", "unknown")},
}


@given(st.fixed_dictionaries({}, optional=_FIELD_VALUES))
@settings(max_examples=200, deadline=None)
def test_any_input_is_a_fence_or_a_refusal_naming_fields(fields):
    try:
        valid = validate_geofence(fields)
    except GeofenceRejected as refusal:
        assert refusal.errors and all(isinstance(m, list) and m for m in refusal.errors.values())
    else:
        assert valid.kind in ("circle", "polygon")
