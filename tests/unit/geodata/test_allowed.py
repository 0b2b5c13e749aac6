"""Allowed now: first matching rule decides, every moment of the stay counts, local time (GEODATA.md)."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from geodata.allowed import RuleSet, evaluate
from geodata.model import Rate, Rule

LA = "America/Los_Angeles"
PAID = Rule("Mo-Sa 08:00-19:00", "parking", "public", 120, True, Rate(0.5, 15, "USD"))
FREE_OTHERWISE = Rule(None, "parking", "public")
TUESDAY_10 = datetime(2024, 7, 2, 10, 0)


def local(*args) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(LA))


def test_paid_parking_allows_a_stay_within_the_max_stay_and_says_until_when():
    decision = evaluate([PAID, FREE_OTHERWISE], TUESDAY_10, 60, LA)

    assert decision.allowed
    assert decision.allowed_until == local(2024, 7, 2, 12, 0)
    assert decision.max_stay_min == 120
    assert decision.fee is True
    assert decision.rate == Rate(0.5, 15, "USD")
    assert decision.why[0] == "paid parking until 19:00, max stay 120 min (0.50 USD per 15 min)"


def test_a_stay_longer_than_the_max_stay_is_refused():
    decision = evaluate([PAID, FREE_OTHERWISE], TUESDAY_10, 180, LA)

    assert not decision.allowed
    assert decision.allowed_until == local(2024, 7, 2, 12, 0)
    assert "max stay 120 min, shorter than the 180 min asked" in decision.why


def test_a_rule_change_inside_the_stay_counts():
    rules = [Rule("Mo-Fr 16:00-19:00", "no_stopping"), Rule(None, "parking")]

    short = evaluate(rules, datetime(2024, 7, 2, 15, 0), 60, LA)
    long = evaluate(rules, datetime(2024, 7, 2, 15, 0), 90, LA)

    assert short.allowed and short.allowed_until == local(2024, 7, 2, 16, 0)
    assert not long.allowed and long.allowed_until == local(2024, 7, 2, 16, 0)
    assert "no stopping from 16:00" in long.why


def test_a_max_stay_of_a_later_rule_also_limits_a_stay_that_reaches_it():
    rules = [Rule("Mo-Sa 19:00-24:00", "parking", max_stay_min=60), Rule(None, "parking")]

    # From 18:30, a 120-minute stay would spend time under the 60-minute rule.
    assert not evaluate(rules, datetime(2024, 7, 2, 18, 30), 120, LA).allowed
    assert evaluate(rules, datetime(2024, 7, 2, 18, 30), 60, LA).allowed


def test_allowed_until_is_null_when_parking_holds_for_seven_days():
    decision = evaluate([FREE_OTHERWISE], TUESDAY_10, 600, LA)

    assert decision.allowed and decision.allowed_until is None
    assert decision.why == ("free parking",)


def test_no_matching_rule_means_not_allowed():
    decision = evaluate([PAID], datetime(2024, 7, 7, 10, 0), 30, LA)  # a Sunday

    assert not decision.allowed
    assert decision.why == ("no rule allows parking now",)
    assert not evaluate([], TUESDAY_10, 30, LA).allowed


def test_loading_zones_no_stopping_and_restricted_access_are_never_allowed_for_the_public():
    for rule in (
        Rule(None, "loading"),
        Rule(None, "no_stopping"),
        Rule(None, "no_parking"),
        Rule(None, "parking", "residents"),
        Rule(None, "parking", "permit"),
    ):
        assert not evaluate([rule], TUESDAY_10, 5, LA).allowed, rule
    assert evaluate([Rule(None, "loading")], TUESDAY_10, 5, LA).why == ("loading zone now",)


def test_an_aware_start_is_converted_to_the_dataset_time_zone():
    at_utc = datetime(2024, 7, 2, 17, 0, tzinfo=timezone.utc)  # 10:00 in Los Angeles

    decision = evaluate([PAID, FREE_OTHERWISE], at_utc, 60, LA)

    assert decision.allowed_until == datetime(2024, 7, 2, 19, 0, tzinfo=timezone.utc)
    assert decision.allowed_until.tzinfo == ZoneInfo(LA)


def test_the_same_wall_time_means_a_different_instant_in_another_dataset_zone():
    rules = [Rule("Mo-Fr 08:00-18:00", "parking")]
    at = datetime(2024, 7, 2, 16, 0, tzinfo=timezone.utc)  # 18:00 in Paris, 09:00 in Los Angeles

    assert not evaluate(rules, at, 30, "Europe/Paris").allowed
    assert evaluate(rules, at, 30, LA).allowed


def test_durations_are_real_minutes_across_the_spring_forward_night():
    overnight = [Rule("Sa 20:00-24:00; Su 00:00-08:00", "parking")]
    start = datetime(2024, 3, 9, 22, 0)  # Saturday 22:00 PST; clocks jump 02:00 → 03:00

    nine_hours = evaluate(overnight, start, 9 * 60, LA)
    nine_and_a_half = evaluate(overnight, start, 9 * 60 + 30, LA)

    assert nine_hours.allowed
    assert not nine_and_a_half.allowed  # a wall-clock sum would say 07:30 and allow it
    assert nine_hours.allowed_until == local(2024, 3, 10, 8, 0)
    assert nine_hours.allowed_until.utcoffset().total_seconds() == -7 * 3600


def test_durations_are_real_minutes_across_the_fall_back_night():
    overnight = [Rule("Sa 20:00-24:00; Su 00:00-08:00", "parking")]
    start = datetime(2024, 11, 2, 22, 0)  # Saturday 22:00 PDT; clocks go 02:00 → 01:00

    assert evaluate(overnight, start, 10 * 60 + 30, LA).allowed  # 11 real hours until 08:00 PST
    assert not evaluate(overnight, start, 11 * 60 + 30, LA).allowed


def test_public_holidays_lift_a_rule_when_the_dataset_country_is_known():
    metered = [Rule("Mo-Sa 08:00-19:00; PH off", "parking", fee=True)]
    independence_day = datetime(2024, 7, 4, 10, 0)

    assert not evaluate(metered, independence_day, 30, LA, "US").allowed
    assert evaluate(metered, datetime(2024, 7, 3, 10, 0), 30, LA, "US").allowed


def test_an_unknown_state_is_not_a_permission():
    assert not evaluate([Rule("Mo-Su 00:00-24:00 unknown", "parking")], TUESDAY_10, 5, LA).allowed


def test_a_rule_set_is_compiled_once_and_gives_the_same_answer_repeatedly():
    rules = RuleSet([PAID, FREE_OTHERWISE], LA)

    first = rules.evaluate(TUESDAY_10, 60)
    again = rules.evaluate(TUESDAY_10, 60)

    assert first == again
    assert not rules.never
    assert RuleSet([Rule(None, "no_stopping")], LA).never
