"""Geofences: what a user notices — entering, leaving, staying, schedules — and an index that
answers exactly what a brute-force scan answers."""

from __future__ import annotations

import json
import math
import random
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import shapely
from geographiclib.geodesic import Geodesic
from shapely.geometry import MultiPolygon, Polygon

from geodata.geo import distance_m, metres_per_degree, point_segment_distance_m, segments_of
from geodata.geofences import (
    DWELLED,
    ENTERED,
    EXITED,
    Fix,
    Geofence,
    GeofenceIndex,
    GeofenceInvalid,
    GeofenceLimits,
    due_at,
    inside,
    new_state,
    parse_geofence,
    step,
    tick,
)

BERLIN = (52.52, 13.405)
T0 = datetime(2024, 6, 3, 10, 0, tzinfo=timezone.utc)  # a Monday, 12:00 in Berlin


def moved(lat: float, lon: float, bearing: float, metres: float) -> tuple[float, float]:
    """The point ``metres`` away from (lat, lon) on ``bearing`` degrees, exactly (geographiclib)."""
    out = Geodesic.WGS84.Direct(lat, lon, bearing, metres)
    return out["lat2"], out["lon2"]


def square(lat: float, lon: float, half_m: float) -> list[tuple[float, float]]:
    """A closed (lon, lat) ring: a square of side 2 × half_m centred on (lat, lon)."""
    n_lat, _ = moved(lat, lon, 0, half_m)
    _, e_lon = moved(lat, lon, 90, half_m)
    d_lat, d_lon = n_lat - lat, e_lon - lon
    return [(lon - d_lon, lat - d_lat), (lon + d_lon, lat - d_lat), (lon + d_lon, lat + d_lat),
            (lon - d_lon, lat + d_lat), (lon - d_lon, lat - d_lat)]


def fix(lat: float, lon: float, seconds: float = 0, accuracy: float | None = 5.0) -> Fix:
    return Fix(lat, lon, T0 + timedelta(seconds=seconds), accuracy)


def run(index: GeofenceIndex, fixes: list[Fix], state: dict | None = None) -> tuple[dict, list]:
    """Feed fixes one by one; all events, in order."""
    events = []
    for f in fixes:
        state, new = step(index, state, f)
        events.extend(new)
    return state, events


def kinds(events) -> list[tuple[str, str]]:
    return [(e.type, e.fence_id) for e in events]


# --------------------------------------------------------------------------- parsing


def test_a_circle_is_parsed_and_round_trips():
    fence, notes = parse_geofence({"id": "shop", "center": {"lat": 52.52, "lon": 13.405}, "radius_m": 150,
                                   "dwell_s": 300, "tag": "dealer", "metadata": {"brand": "smart"}})

    assert fence.is_circle and fence.radius_m == 150 and fence.dwell_s == 300
    assert notes == []
    again, _ = parse_geofence(json.loads(json.dumps(fence.to_dict())))
    assert again.to_dict() == fence.to_dict()


def test_every_wrong_field_is_reported_at_once_with_its_name():
    with pytest.raises(GeofenceInvalid) as info:
        parse_geofence({"id": "z", "center": {"lat": 52.5, "lon": 13.4}, "radius_m": 5,
                        "schedule": "Mo-Fr 25:00-26:00 nonsense", "timezone": "Mars/Olympus", "dwell_s": -1})

    fields = {i.field: i.message for i in info.value.issues}
    assert set(fields) == {"radius_m", "schedule", "timezone", "dwell_s"}
    assert "5 metres is out of range (10 to 10000)" in fields["radius_m"]
    assert "opening_hours" in fields["schedule"]
    assert "unknown time zone 'Mars/Olympus'" in fields["timezone"]


def test_a_circle_with_swapped_coordinates_gets_a_hint():
    with pytest.raises(GeofenceInvalid) as info:
        parse_geofence({"id": "x", "center": {"lat": 113.4, "lon": 52.5}, "radius_m": 100})

    assert "look swapped" in str(info.value)


def test_geometry_must_be_an_area():
    with pytest.raises(GeofenceInvalid) as info:
        parse_geofence({"id": "line", "geometry": {"type": "LineString", "coordinates": [[13.4, 52.5], [13.5, 52.5]]}})
    assert "'LineString' is not a geofence" in str(info.value)

    with pytest.raises(GeofenceInvalid) as info:
        parse_geofence({"id": "both", "center": {"lat": 52.5, "lon": 13.4}, "radius_m": 100,
                        "geometry": {"type": "Polygon", "coordinates": [square(*BERLIN, 100)]}})
    assert "either center + radius_m" in str(info.value)


def test_a_polygon_with_a_hole_is_accepted():
    outer, hole = square(*BERLIN, 300), square(*BERLIN, 100)
    fence, notes = parse_geofence({"id": "ring", "geometry": {"type": "Polygon", "coordinates": [outer, hole]}})

    assert fence.geometry.geom_type == "Polygon" and len(fence.geometry.interiors) == 1
    assert notes == []


def test_a_self_crossing_polygon_is_rejected_with_where_it_crosses():
    bowtie = [[13.40, 52.50], [13.41, 52.51], [13.41, 52.50], [13.40, 52.51], [13.40, 52.50]]
    with pytest.raises(GeofenceInvalid) as info:
        parse_geofence({"id": "bow", "geometry": {"type": "Polygon", "coordinates": [bowtie]}})

    (issue,) = info.value.issues
    assert issue.field == "geometry" and issue.feature == "bow"
    assert "the boundary crosses itself near latitude 52.505000, longitude 13.405000" in issue.message
    assert "split it into 2 parts, so it was rejected" in issue.message


def test_a_polygon_with_a_spike_is_repaired_and_says_so():
    spiked = [[13.40, 52.50], [13.42, 52.50], [13.42, 52.51], [13.43, 52.51], [13.42, 52.51], [13.42, 52.52],
              [13.40, 52.52]]  # not closed either
    fence, notes = parse_geofence({"id": "spike", "geometry": {"type": "Polygon", "coordinates": [spiked]}})

    assert fence.geometry.is_valid
    assert fence.geometry.area == pytest.approx(0.02 * 0.02)
    messages = [n.message for n in notes]
    assert any("was not closed" in m for m in messages)
    assert any("crosses itself" in m and "was repaired" in m for m in messages)
    assert all(n.level == "repaired" for n in notes)


def test_overlapping_multipolygon_parts_are_merged_and_a_broken_part_is_named():
    a, b = square(52.52, 13.405, 100), square(52.52, 13.406, 100)  # overlap by ~30 m
    fence, notes = parse_geofence({"id": "m", "geometry": {"type": "MultiPolygon", "coordinates": [[a], [b]]}})
    assert fence.geometry.is_valid and fence.geometry.geom_type == "Polygon"
    assert any("overlap; they were merged" in n.message for n in notes)

    bowtie = [[13.40, 52.50], [13.41, 52.51], [13.41, 52.50], [13.40, 52.51], [13.40, 52.50]]
    with pytest.raises(GeofenceInvalid) as info:
        parse_geofence({"id": "m2", "geometry": {"type": "MultiPolygon", "coordinates": [[a], [bowtie]]}})
    assert str(info.value).startswith("geometry: part 2: invalid polygon")


def test_too_many_vertices_are_refused():
    ring = [[13.4 + 0.01 * math.cos(t), 52.5 + 0.006 * math.sin(t)]
            for t in np.linspace(0, 2 * math.pi, 60, endpoint=False)]
    ring.append(ring[0])
    with pytest.raises(GeofenceInvalid) as info:
        parse_geofence({"id": "big", "geometry": {"type": "Polygon", "coordinates": [ring]}},
                       limits=GeofenceLimits(max_vertices=50))
    assert "61 vertices; the limit is 50" in str(info.value)


# --------------------------------------------------------------------------- the index


def test_a_circle_reports_inside_and_the_signed_distance_to_its_edge():
    index = GeofenceIndex([Geofence.circle("c", *BERLIN, 100)])

    assert index.containing(*moved(*BERLIN, 45, 99)) == ["c"]
    assert index.containing(*moved(*BERLIN, 45, 101)) == []
    ev = index.evaluate(*moved(*BERLIN, 200, 130))
    assert ev.inside.tolist() == [False] and ev.signed_m[0] == pytest.approx(30, abs=0.01)
    ev = index.evaluate(*moved(*BERLIN, 300, 60))
    assert ev.inside.tolist() == [True] and ev.signed_m[0] == pytest.approx(-40, abs=0.01)
    assert len(index.evaluate(*moved(*BERLIN, 0, 151)).positions) == 0  # beyond the 50 m margin


def test_inside_the_hole_of_a_polygon_is_outside():
    ring = Polygon(square(*BERLIN, 300), [square(*BERLIN, 100)])
    index = GeofenceIndex([Geofence("ring", ring)])

    assert index.containing(*BERLIN) == []
    ev = index.evaluate(*BERLIN, 150)  # 100 m from the hole's edge
    assert ev.inside.tolist() == [False] and ev.signed_m[0] == pytest.approx(100, abs=0.01)
    in_ring = moved(*BERLIN, 0, 200)
    assert index.containing(*in_ring) == ["ring"]
    assert index.evaluate(*in_ring, 150).signed_m[0] == pytest.approx(-100, abs=0.01)
    assert index.evaluate(*in_ring).signed_m[0] == -math.inf  # deeper than the default 50 m margin


def test_a_multipolygon_contains_points_of_either_part_and_not_between():
    west, east = moved(*BERLIN, 270, 500), moved(*BERLIN, 90, 500)
    index = GeofenceIndex([Geofence("two", MultiPolygon([Polygon(square(*west, 100)), Polygon(square(*east, 100))]))])

    assert index.containing(*west) == ["two"]
    assert index.containing(*east) == ["two"]
    assert index.containing(*BERLIN) == []


def test_duplicate_ids_are_refused():
    with pytest.raises(ValueError, match="duplicate geofence id 'a'"):
        GeofenceIndex([Geofence.circle("a", *BERLIN, 50), Geofence.circle("a", 52.0, 13.0, 50)])


def _star(rng: random.Random, lat: float, lon: float, radius: float, k: int, lo: float = 0.7
          ) -> list[tuple[float, float]]:
    """A ring of ``k`` vertices at ``lo``–1 × ``radius`` metres around (lat, lon); stratified angles keep
    every gap below 180°, so it never crosses itself."""
    m_lat, m_lon = metres_per_degree(lat)
    out = []
    for j in range(k):
        a, r = 2 * math.pi * (j + rng.uniform(0, 0.8)) / k, radius * rng.uniform(lo, 1.0)
        out.append((lon + r * math.sin(a) / m_lon, lat + r * math.cos(a) / m_lat))
    return out


def _random_fences(rng: random.Random, n: int) -> list[Geofence]:
    """Circles (some tiny), polygons, polygons with a hole, two-part multipolygons and 400-vertex districts."""
    lat0, lon0 = BERLIN
    fences = []
    for i in range(n):
        lat, lon = lat0 + rng.uniform(-0.03, 0.03), lon0 + rng.uniform(-0.05, 0.05)
        shape = rng.choice(["circle", "circle", "star", "star", "holed", "multi", "district", "tiny"])
        if shape in ("circle", "tiny"):
            radius = rng.uniform(10, 15) if shape == "tiny" else rng.uniform(20, 3000)
            fences.append(Geofence.circle(f"f{i}", lat, lon, radius))
            continue
        radius = {"star": rng.uniform(20, 400), "holed": rng.uniform(100, 600), "multi": rng.uniform(30, 200),
                  "district": rng.uniform(1500, 4000)}[shape]
        k = 400 if shape == "district" else rng.randint(5, 30)
        if shape == "holed":
            geom = Polygon(_star(rng, lat, lon, radius, k), [_star(rng, lat, lon, radius * 0.3, k)])
        elif shape == "multi":
            other = moved(lat, lon, rng.uniform(0, 360), radius * 3)
            geom = MultiPolygon([Polygon(_star(rng, lat, lon, radius, k)), Polygon(_star(rng, *other, radius, k))])
        else:
            geom = Polygon(_star(rng, lat, lon, radius, k))
        assert geom.is_valid
        fences.append(Geofence(f"f{i}", geom, hysteresis_m=rng.choice([0.0, 10.0, 20.0, 50.0])))
    return fences


class BruteForce:
    """Signed geodesic distance to every fence, one fence at a time: geographiclib for circles, every
    segment of every ring for polygons (geodata.geo), shapely for inside."""

    def __init__(self, fences: list[Geofence]) -> None:
        self.fences = fences
        self.segments = [None if f.is_circle else np.asarray(segments_of(f.geometry)) for f in fences]

    def __call__(self, lat: float, lon: float) -> dict[int, float]:
        out = {}
        for i, (f, seg) in enumerate(zip(self.fences, self.segments)):
            if seg is None:
                d = distance_m(lat, lon, f.geometry.y, f.geometry.x) - f.radius_m
                if abs(d) < 500:  # near enough to matter: the exact geodesic
                    d = Geodesic.WGS84.Inverse(lat, lon, f.geometry.y, f.geometry.x, Geodesic.DISTANCE)["s12"] \
                        - f.radius_m
                out[i] = d
                continue
            d = float(point_segment_distance_m(lat, lon, seg[:, 1], seg[:, 0], seg[:, 3], seg[:, 2]).min())
            out[i] = -d if shapely.contains_xy(f.geometry, lon, lat) else d
        return out


def _assert_matches(got: dict[int, tuple[bool, float]], expected: dict[int, float], margin: float) -> None:
    tol = 0.02  # metres
    for pos, d in expected.items():
        if abs(d - margin) < tol or abs(d) < tol:
            continue  # too close to a decision boundary to require one answer
        if d <= margin:
            assert pos in got, (pos, d)
            is_inside, signed = got[pos]
            assert is_inside == (d < 0), (pos, d, got[pos])
            if d < -margin - tol:
                assert signed == -math.inf or abs(signed - d) < tol, (pos, d, signed)
            else:
                assert abs(signed - d) < tol, (pos, d, signed)
        else:
            assert pos not in got, (pos, d, got[pos])


@pytest.mark.parametrize("seed", range(4))
def test_the_index_answers_what_a_brute_force_scan_answers(seed):
    rng = random.Random(seed)
    fences = _random_fences(rng, 250)
    index = GeofenceIndex(fences)
    points = []
    for _ in range(120):
        if rng.random() < 0.5:
            points.append((BERLIN[0] + rng.uniform(-0.04, 0.04), BERLIN[1] + rng.uniform(-0.06, 0.06)))
        else:  # near a boundary, where the answers matter most
            f = rng.choice(fences)
            x, y = shapely.get_coordinates(f.geometry)[rng.randrange(len(shapely.get_coordinates(f.geometry)))]
            if f.is_circle:
                y, x = moved(y, x, rng.uniform(0, 360), f.radius_m)
            points.append(moved(y, x, rng.uniform(0, 360), rng.uniform(0, 80)))
    margins = [rng.choice([0.0, 20.0, 50.0, 120.0]) for _ in points]
    batch = index.evaluate_many(np.array([p[0] for p in points]), np.array([p[1] for p in points]),
                                np.array(margins))
    brute_force = BruteForce(fences)
    for i, ((lat, lon), margin) in enumerate(zip(points, margins)):
        expected = brute_force(lat, lon)
        ev = index.evaluate(lat, lon, margin)
        got = {p: (bool(a), float(s)) for p, a, s in zip(ev.positions, ev.inside, ev.signed_m)}
        assert len(got) == len(ev.positions)  # one row per fence
        _assert_matches(got, expected, margin)
        one = batch.for_point(i)
        assert {p: (bool(a), float(s)) for p, a, s in zip(one.positions, one.inside, one.signed_m)} == got
        for pos, (_, signed) in got.items():
            if signed == -math.inf:
                assert index.signed_distance_m(pos, lat, lon) == pytest.approx(expected[pos], abs=0.02)


def test_an_empty_index_finds_nothing():
    index = GeofenceIndex([])

    assert len(index.evaluate(*BERLIN).positions) == 0
    assert len(index.evaluate_many(np.array([52.5]), np.array([13.4])).point) == 0
    assert step(index, None, fix(*BERLIN))[1] == []


# --------------------------------------------------------------------------- the state machine


def test_walking_into_and_out_of_a_circle_enters_then_exits():
    index = GeofenceIndex([Geofence.circle("shop", *BERLIN, 100, hysteresis_m=20)])
    path = [moved(*BERLIN, 90, d) for d in (400, 200, 60, 0, 60, 200)]

    state, events = run(index, [fix(lat, lon, 10 * i) for i, (lat, lon) in enumerate(path)])

    assert kinds(events) == [(ENTERED, "shop"), (EXITED, "shop")]
    entered, exited = events
    assert entered.at == T0 + timedelta(seconds=20) and entered.distance_m == pytest.approx(-40, abs=0.01)
    assert exited.at == T0 + timedelta(seconds=50) and exited.reason == "left"
    assert exited.inside_since == entered.at
    assert state["fences"] == {}


def test_walking_through_a_polygon_with_a_hole_exits_in_the_hole():
    ring = Polygon(square(*BERLIN, 300), [square(*BERLIN, 150)])
    index = GeofenceIndex([Geofence("park", ring, hysteresis_m=20)])
    path = [moved(*BERLIN, 0, d) for d in (400, 230, 80, 0, 80, 230)]

    _, events = run(index, [fix(lat, lon, 10 * i) for i, (lat, lon) in enumerate(path)])

    assert [(e.type, e.at - T0) for e in events] == [
        (ENTERED, timedelta(seconds=10)), (EXITED, timedelta(seconds=20)), (ENTERED, timedelta(seconds=50))]


def test_gps_jitter_at_the_border_does_not_flap():
    index = GeofenceIndex([Geofence.circle("zone", *BERLIN, 200, hysteresis_m=20)])
    jitter = [(-1) ** i * 12.0 for i in range(20)]  # ±12 m around the edge
    fixes = [fix(*moved(*BERLIN, 30, 200 + j), i) for i, j in enumerate(jitter)]
    fixes.append(fix(*moved(*BERLIN, 30, 150), 30))  # really inside
    fixes += [fix(*moved(*BERLIN, 30, 200 + j), 40 + i) for i, j in enumerate(jitter)]
    fixes.append(fix(*moved(*BERLIN, 30, 260), 80))  # really outside

    _, events = run(index, fixes)

    assert [(e.type, e.at - T0) for e in events] == [
        (ENTERED, timedelta(seconds=30)), (EXITED, timedelta(seconds=80))]


def test_an_imprecise_fix_needs_to_be_deeper_inside_and_a_useless_one_is_ignored():
    index = GeofenceIndex([Geofence.circle("zone", *BERLIN, 200, hysteresis_m=20)])
    at_30m_inside = moved(*BERLIN, 0, 170)

    assert step(index, None, fix(*at_30m_inside, accuracy=40))[1] == []  # band 40 m: not deep enough
    assert kinds(step(index, None, fix(*at_30m_inside, accuracy=8))[1]) == [(ENTERED, "zone")]
    assert step(index, None, fix(*BERLIN, accuracy=250))[1] == []  # too coarse to place anyone

    state, _ = step(index, None, fix(*BERLIN))
    far_away = moved(*BERLIN, 0, 5000)
    state, events = step(index, state, fix(*far_away, 10, accuracy=500))
    assert events == [] and "zone" in state["fences"]  # a coarse fix does not take anyone out
    assert kinds(step(index, state, fix(*far_away, 20, accuracy=10))[1]) == [(EXITED, "zone")]


def test_dwell_fires_once_after_dwell_s_and_again_after_a_new_stay():
    index = GeofenceIndex([Geofence.circle("cafe", *BERLIN, 50, dwell_s=300, hysteresis_m=10)])
    outside = moved(*BERLIN, 0, 200)
    fixes = [fix(*BERLIN, t) for t in (0, 120, 299, 300, 420, 900)]
    fixes += [fix(*outside, 1000), fix(*BERLIN, 1100), fix(*BERLIN, 1450)]

    _, events = run(index, fixes)

    assert [(e.type, e.at - T0) for e in events] == [
        (ENTERED, timedelta(0)), (DWELLED, timedelta(seconds=300)), (EXITED, timedelta(seconds=1000)),
        (ENTERED, timedelta(seconds=1100)), (DWELLED, timedelta(seconds=1450))]
    assert events[1].inside_since == T0


def test_a_stay_without_new_fixes_dwells_on_a_tick_at_the_time_due_at_says():
    index = GeofenceIndex([Geofence.circle("cafe", *BERLIN, 50, dwell_s=600)])
    state, _ = step(index, None, fix(*BERLIN))

    assert due_at(index, state) == T0 + timedelta(seconds=600)
    assert tick(index, state, T0 + timedelta(seconds=599))[1] == []
    state, events = tick(index, state, T0 + timedelta(seconds=600))
    assert kinds(events) == [(DWELLED, "cafe")]
    assert due_at(index, state) is None


def test_a_closed_fence_lets_nobody_in_and_closing_lets_everyone_out():
    # Open 08:00–18:00 Berlin time on weekdays; T0 is Monday 12:00 in Berlin.
    index = GeofenceIndex([Geofence.circle("market", *BERLIN, 100, schedule="Mo-Fr 08:00-18:00",
                                           timezone="Europe/Berlin")])
    evening = T0 + timedelta(hours=7)  # 19:00 in Berlin

    assert step(index, None, Fix(*BERLIN, evening, 5))[1] == []
    state, events = step(index, None, Fix(*BERLIN, T0, 5))
    assert kinds(events) == [(ENTERED, "market")]
    assert due_at(index, state) == datetime(2024, 6, 3, 16, 0, tzinfo=timezone.utc)  # 18:00 Berlin
    state, events = step(index, state, Fix(*BERLIN, evening, 5))
    assert kinds(events) == [(EXITED, "market")] and events[0].reason == "closed"
    next_morning = datetime(2024, 6, 4, 7, 0, tzinfo=timezone.utc)  # 09:00 Berlin
    assert kinds(step(index, state, Fix(*BERLIN, next_morning, 5))[1]) == [(ENTERED, "market")]


def test_a_closing_is_noticed_by_a_tick_too():
    index = GeofenceIndex([Geofence.circle("market", *BERLIN, 100, schedule="Mo-Fr 08:00-18:00",
                                           timezone="Europe/Berlin")])
    state, _ = step(index, None, Fix(*BERLIN, T0, 5))

    state, events = tick(index, state, due_at(index, state))
    assert kinds(events) == [(EXITED, "market")] and events[0].reason == "closed"


def test_late_and_duplicate_fixes_are_ignored():
    index = GeofenceIndex([Geofence.circle("shop", *BERLIN, 100)])
    state, _ = step(index, None, fix(*BERLIN, 60))

    far = moved(*BERLIN, 0, 1000)
    same, events = step(index, state, fix(*far, 30))  # older than what was processed
    assert events == [] and same == state
    same, events = step(index, state, fix(*far, 60))  # the same moment again
    assert events == [] and same == state
    assert kinds(step(index, state, fix(*far, 61))[1]) == [(EXITED, "shop")]


def test_a_tiny_fence_can_be_entered_and_needs_the_full_band_to_leave():
    index = GeofenceIndex([Geofence.circle("kiosk", *BERLIN, 10, hysteresis_m=25)])

    assert step(index, None, fix(*moved(*BERLIN, 0, 7)))[1] == []  # 3 m inside: outside the inner half
    state, events = step(index, None, fix(*moved(*BERLIN, 0, 3)))
    assert kinds(events) == [(ENTERED, "kiosk")]
    state, events = step(index, state, fix(*moved(*BERLIN, 0, 30), 10))  # 20 m outside: within the band
    assert events == []
    assert kinds(step(index, state, fix(*moved(*BERLIN, 0, 36), 20))[1]) == [(EXITED, "kiosk")]


def test_moving_between_two_neighbouring_fences_exits_one_before_entering_the_other():
    a = Polygon(square(*moved(*BERLIN, 270, 150), 150))
    b = Polygon(square(*moved(*BERLIN, 90, 150), 150))  # shares the edge through BERLIN
    index = GeofenceIndex([Geofence("a", a, hysteresis_m=10), Geofence("b", b, hysteresis_m=10)])

    _, events = run(index, [fix(*moved(*BERLIN, 270, 100), 0), fix(*moved(*BERLIN, 90, 100), 10)])

    assert kinds(events) == [(ENTERED, "a"), (EXITED, "a"), (ENTERED, "b")]


def test_the_state_is_plain_json_and_never_modified_in_place():
    index = GeofenceIndex([Geofence.circle("shop", *BERLIN, 100, dwell_s=60)])
    state, _ = step(index, new_state(), fix(*BERLIN))
    stored = json.loads(json.dumps(state))
    snapshot = json.dumps(stored, sort_keys=True)

    again, events = step(index, stored, fix(*BERLIN, 90))
    assert kinds(events) == [(DWELLED, "shop")]
    assert json.dumps(stored, sort_keys=True) == snapshot
    assert inside(again) == {"shop": T0}
    assert events[0].to_dict() == {"type": DWELLED, "fence_id": "shop", "at": "2024-06-03T10:01:30+00:00",
                                   "inside_since": "2024-06-03T10:00:00+00:00"}


def test_a_removed_fence_is_forgotten_without_an_event():
    state, _ = step(GeofenceIndex([Geofence.circle("old", *BERLIN, 100)]), None, fix(*BERLIN))

    state, events = step(GeofenceIndex([Geofence.circle("new", 48.0, 11.0, 100)]), state, fix(*BERLIN, 10))
    assert events == [] and state["fences"] == {}


def test_a_naive_time_is_refused():
    index = GeofenceIndex([Geofence.circle("shop", *BERLIN, 100)])
    with pytest.raises(ValueError, match="timezone-aware"):
        step(index, None, Fix(*BERLIN, datetime(2024, 6, 3, 10, 0)))


def test_a_position_that_is_not_one_is_refused():
    index = GeofenceIndex([Geofence.circle("shop", *BERLIN, 100)])
    with pytest.raises(ValueError, match="not a latitude, longitude pair"):
        index.evaluate(float("nan"), 13.4)
    with pytest.raises(ValueError, match="within -90..90"):
        index.evaluate_many(np.array([95.0]), np.array([13.4]))


@pytest.mark.parametrize("seed", range(3))
def test_the_compiled_cell_pass_answers_to_the_bit_what_the_array_path_answers(seed, monkeypatch):
    # Distances, inside flags (ring crossings instead of GEOS away from the boundary) and row order.
    from geodata import kernels
    from geodata.geofences import kernels as fence_kernels

    if not kernels.enabled():
        pytest.skip("Numba is switched off (NUMBA_DISABLE_JIT)")
    rng = random.Random(100 + seed)
    fences = _random_fences(rng, 300)
    index = GeofenceIndex(fences)
    points = [(BERLIN[0] + rng.uniform(-0.04, 0.04), BERLIN[1] + rng.uniform(-0.06, 0.06), rng.choice([0.0, 20.0, 50.0]))
              for _ in range(400)]
    calls = []
    compiled_pass = fence_kernels.evaluate_cell
    monkeypatch.setattr("geodata.geofences.index.evaluate_cell", lambda *a: calls.append(1) or compiled_pass(*a))

    lats, lons, margins = (np.array(column) for column in zip(*points))
    compiled = [index.evaluate(lat, lon, margin) for lat, lon, margin in points]
    compiled_batch = index.evaluate_many(lats, lons, margins)
    monkeypatch.setattr(kernels, "enabled", lambda: False)
    arrays = [index.evaluate(lat, lon, margin) for lat, lon, margin in points]
    arrays_batch = index.evaluate_many(lats, lons, margins)

    assert len(calls) > 300  # most points lie in a cell with polygons
    for got, expected in zip(compiled, arrays):
        assert got.positions.tolist() == expected.positions.tolist()
        assert got.inside.tolist() == expected.inside.tolist()
        assert got.signed_m.tolist() == expected.signed_m.tolist()
    for column in ("point", "positions", "inside", "signed_m"):
        assert getattr(compiled_batch, column).tolist() == getattr(arrays_batch, column).tolist(), column
