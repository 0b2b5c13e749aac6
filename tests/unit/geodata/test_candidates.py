"""CandidateJudge decides spot by spot exactly what search() decides over an index."""

from __future__ import annotations

import random
from datetime import datetime

import pytest
from shapely.geometry import LineString, Point, Polygon

from geodata.candidates import CandidateJudge
from geodata.index import SpotIndex
from geodata.model import Rule, Spot, Vehicle
from geodata.search import search

SMART = Vehicle(2.69, 1.66, 1.55, 900)
GOLF = Vehicle(4.5, 1.8, 1.5, 1400)
VAN = Vehicle(5.4, 2.0, 2.5, 3200)
UNKNOWN_HEIGHT = Vehicle(4.2)
TEMPLATES = [
    (Rule(None, "parking"),),
    (Rule("Mo-Sa 09:00-20:00", "parking", "public", 120, True), Rule(None, "parking")),
    (Rule(None, "no_stopping"),),
    (Rule("Mo-Fr 07:00-09:00", "no_parking"), Rule(None, "parking", max_stay_min=240)),
    (Rule("Mo-Su 10:30-11:00", "loading"), Rule(None, "parking", "public", None, True)),
    (Rule(None, "parking", "residents"),),
]


def random_spots(rng: random.Random, count: int) -> list[Spot]:
    spots = []
    for i in range(count):
        lon, lat = 13.40 + rng.uniform(0, 0.02), 52.50 + rng.uniform(0, 0.02)
        geom = rng.choice([
            Point(lon, lat),
            LineString([(lon, lat), (lon + rng.uniform(2e-5, 2e-4), lat + rng.uniform(-5e-5, 5e-5))]),
            Polygon([(lon, lat), (lon + 3e-4, lat), (lon + 3e-4, lat + 2e-4), (lon, lat + 2e-4)]),
        ])
        spots.append(Spot(
            geom, kind=rng.choice(["curb", "space", "lot", None]),
            orientation=rng.choice(["parallel", "perpendicular", "diagonal", None]),
            length_m=rng.choice([None, round(rng.uniform(2.5, 20), 2)]),
            max_vehicle_length_m=rng.choice([None, None, 5.0]),
            max_vehicle_width_m=rng.choice([None, None, 1.9]),
            max_vehicle_height_m=rng.choice([None, 1.9, 2.2]),
            max_vehicle_weight_kg=rng.choice([None, None, 3500.0]),
            capacity=rng.choice([None, None, 0, 2, 10]), rules=rng.choice(TEMPLATES),
            source_dataset=rng.choice(["berlin", "la"]), source_feature_id=str(i),
        ))
    return spots


@pytest.mark.parametrize("seed", range(3))
def test_the_judge_agrees_with_search_over_an_index(seed):
    rng = random.Random(seed)
    zones = {"berlin": "Europe/Berlin", "la": "America/Los_Angeles"}
    index = SpotIndex(random_spots(rng, 2000), timezones=zones)
    for _ in range(20):
        lat, lon = 52.50 + rng.uniform(0, 0.02), 13.40 + rng.uniform(0, 0.02)
        vehicle = rng.choice([SMART, GOLF, VAN, UNKNOWN_HEIGHT])
        at = datetime.fromisoformat(f"2024-07-0{rng.randint(1, 7)}T{rng.randint(0, 23):02d}:25:00+02:00")
        duration = rng.choice([15, 60, 150, 300])
        expected = [r.to_dict() for r in search(index, lat, lon, 500, vehicle, at, duration, limit=30)]

        judge = CandidateJudge(vehicle, at, duration, timezones=zones)
        hits = index.query(lat, lon, 500)
        judged = (judge.judge(index.ids[p], index.spots[p], d)
                  for p, d in zip(hits.positions.tolist(), hits.distances_m.tolist()))
        got = [r.to_dict() for r in judged if r is not None][:30]

        assert got == expected


def test_a_spot_without_any_public_parking_rule_is_never_allowed():
    judge = CandidateJudge(SMART, datetime.fromisoformat("2024-07-02T10:00:00+02:00"), 30)
    spot = Spot(Point(13.4, 52.5), kind="lot", rules=(Rule(None, "parking", "permit"),))

    assert judge.fits(spot)
    assert judge.decision(spot) is None
    assert judge.judge("x", spot, 3.0) is None


def test_a_result_carries_the_fit_reasons_and_the_rules_in_the_datasets_zone():
    judge = CandidateJudge(SMART, datetime.fromisoformat("2024-07-02T08:00:00+00:00"), 60,
                           timezones={"paris": "Europe/Paris"})
    spot = Spot(LineString([(2.35, 48.85), (2.35007, 48.85)]), kind="curb", orientation="parallel", length_m=5.4,
                rules=(Rule("Mo-Sa 09:00-20:00", "parking", "public", 120, True), Rule(None, "parking")),
                source_dataset="paris", source_feature_id="gap")

    item = judge.judge("paris.0", spot, 12.345).to_dict()

    assert item["distance_m"] == 12.35 and item["spaces_for_vehicle"] == 1
    assert item["allowed_until"] == "2024-07-02T12:00:00+02:00"
    assert item["why"][0] == "5.4 m curb holds 1 car of 2.69 m (needs 3.69 m each)"
    assert judge.judge("paris.0", spot, 1.0) is not None
    assert CandidateJudge(GOLF, judge.at, 60, timezones={"paris": "Europe/Paris"}).judge("p", spot, 1.0) is None


def test_judges_of_the_same_stay_share_decisions_and_other_stays_get_their_own(monkeypatch):
    import geodata.candidates as candidates
    from geodata.allowed import RuleSet

    candidates._decisions.clear()
    evaluated: list[tuple] = []
    original = RuleSet.evaluate

    def counting(self, at, duration_min):
        evaluated.append((self.rules, at, duration_min))
        return original(self, at, duration_min)

    monkeypatch.setattr(RuleSet, "evaluate", counting)
    paid = (Rule("Mo-Sa 09:00-20:00", "parking", "public", 120, True), Rule(None, "parking"))
    spot = Spot(LineString([(2.35, 48.85), (2.3501, 48.85)]), kind="curb", orientation="parallel", length_m=8.0,
                rules=paid, source_dataset="paris", source_feature_id="a")
    tuesday_10, tuesday_21 = datetime(2024, 7, 2, 10, 0), datetime(2024, 7, 2, 21, 0)
    first = CandidateJudge(SMART, tuesday_10, 60, timezones={"paris": "Europe/Paris"}).decision(spot)
    second = CandidateJudge(SMART, tuesday_10, 60, timezones={"paris": "Europe/Paris"}).decision(spot)
    assert second is first and len(evaluated) == 1
    evening = CandidateJudge(SMART, tuesday_21, 60, timezones={"paris": "Europe/Paris"}).decision(spot)
    assert len(evaluated) == 2 and first.fee and not evening.fee
    assert evening == RuleSet(paid, "Europe/Paris").evaluate(tuesday_21, 60)
