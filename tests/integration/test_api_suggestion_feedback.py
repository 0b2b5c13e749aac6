"""Feedback on suggestions through the API (SQLite and PostgreSQL): dismissals mute, snoozes push again, 409s and 422s."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select

from smartsvc.models import Interaction
from smartsvc.services.suggestion_timers import run_timers
from smartsvc.timeutil import utcnow
from tests.support.suggestions import SuggestionWorld, parse, suggestion_world


@pytest.fixture
def world(db_app) -> SuggestionWorld:
    return suggestion_world(db_app)


def test_three_dismissals_in_a_row_mute_the_rule_and_accepting_unmutes_it(world):
    alice = world.user("alice")
    rule, other_rule = world.rule("spots"), world.rule("chargers")
    for _ in range(3):
        sid = world.propose(alice, rule)
        world.deliver()
        assert world.feedback(alice, sid, action="dismissed")["status"] == "dismissed"
    muted = world.propose(alice, rule)
    unaffected = world.propose(alice, other_rule)
    world.deliver()
    assert len(world.pushes()) == 4
    detail = world.get(alice, muted)
    assert detail["status"] == "suppressed" and "dismissed" in detail["status_reason"]
    assert "3 times" in detail["status_reason"]
    assert world.get(alice, unaffected)["status"] == "delivered"

    # The muted rule's suggestions still reach the inbox; accepting one there unmutes the rule.
    assert world.feedback(alice, muted, action="accepted")["status"] == "accepted"
    again = world.propose(alice, rule)
    world.deliver()
    assert world.get(alice, again)["status"] == "delivered"
    with world.database.session() as session:
        kinds = session.scalars(select(Interaction.kind).where(Interaction.user_id == uuid.UUID(alice.id))
                                .order_by(Interaction.id)).all()
    assert kinds.count("suggestion.dismissed") == 3 and kinds.count("suggestion.accepted") == 1
    assert kinds.count("suggestion.created") == 6


def test_dismissing_the_same_suggestion_again_counts_once(world):
    alice = world.user("alice")
    rule = world.rule("spots")
    sid = world.propose(alice, rule)
    for _ in range(3):
        world.feedback(alice, sid, action="dismissed")
    world.deliver()
    later = world.propose(alice, rule)
    world.deliver()
    assert world.get(alice, later)["status"] == "delivered"


def test_an_accepted_suggestion_resets_the_dismissals_in_a_row(world):
    alice = world.user("alice")
    rule = world.rule("spots")
    for action in ("dismissed", "dismissed", "accepted", "dismissed", "dismissed"):
        world.feedback(alice, world.propose(alice, rule), action=action)
    last = world.propose(alice, rule)
    assert world.get(alice, last)["status"] == "new"


def test_each_dismissal_lowers_the_rules_score_for_that_user_and_the_journal_shows_it(world):
    alice, bob = world.user("alice"), world.user("bob")
    rule = world.rule("spots")
    for action in ("dismissed", "dismissed", "accepted"):
        world.feedback(alice, world.propose(alice, rule), action=action)
    world.feedback(bob, world.propose(bob, rule), action="dismissed")

    def scores(user) -> list[tuple[str, float]]:
        response = world.client.get("/v1/me/interactions?limit=100", headers=user.headers)
        newest_first = [item for item in response.get_json()["items"]
                        if item["kind"] in ("suggestion.dismissed", "suggestion.accepted")]
        return [(item["kind"], item["data"]["rule_score"]) for item in reversed(newest_first)]

    # Halved on each dismissal, doubled (at most 1) on acceptance; another user's score is their own.
    assert scores(alice) == [("suggestion.dismissed", 0.5), ("suggestion.dismissed", 0.25),
                             ("suggestion.accepted", 0.5)]
    assert scores(bob) == [("suggestion.dismissed", 0.5)]


def test_a_snoozed_suggestion_is_pushed_again_after_the_snooze(world):
    alice = world.user("alice")
    sid = world.propose(alice, world.rule("spots"))
    world.deliver()
    world.feedback(alice, world.propose(alice, world.rule("opened one")), action="opened")
    snoozed = world.feedback(alice, sid, action="snoozed", snooze_min=30)
    assert snoozed["status"] == "snoozed"
    until = parse(snoozed["snoozed_until"])
    assert timedelta(minutes=29) < until - utcnow() <= timedelta(minutes=30)

    assert run_timers(world.database, now=until - timedelta(seconds=1)).repushed == 0
    world.deliver()
    assert [line["suggestion_id"] for line in world.pushes()] == [sid]
    assert run_timers(world.database, now=until).repushed == 1
    world.deliver(now=until)
    world.deliver(now=until)
    assert [line["suggestion_id"] for line in world.pushes()] == [sid, sid]
    detail = world.get(alice, sid)
    assert (detail["status"], detail["snoozed_until"]) == ("delivered", None)
    assert sorted(a["round"] for a in detail["push_attempts"]) == [0, 1]
    assert run_timers(world.database, now=until + timedelta(minutes=1)).repushed == 0


def test_snooze_defaults_to_an_hour(world):
    alice = world.user("alice")
    sid = world.propose(alice, world.rule("spots"))
    until = parse(world.feedback(alice, sid, action="snoozed")["snoozed_until"])
    assert timedelta(minutes=59) < until - utcnow() <= timedelta(minutes=60)


def test_feedback_on_suppressed_and_expired_suggestions(world):
    alice = world.user("alice", consent=False)
    suppressed = world.propose(alice, world.rule("spots"))
    conflict = world.feedback(alice, suppressed, 409, action="snoozed")
    assert "suppressed" in conflict["detail"] and conflict["errors"] == {"action": ["cannot snooze a suppressed suggestion"]}
    assert world.feedback(alice, suppressed, action="opened")["status"] == "opened"

    world.consent(alice, True)
    now = utcnow()
    expired = world.propose(alice, world.rule("old"), now=now, expires_at=now + timedelta(seconds=60))
    run_timers(world.database, now=now + timedelta(minutes=2))
    assert world.get(alice, expired)["status"] == "expired"
    world.feedback(alice, expired, 409, action="snoozed")
    world.feedback(alice, expired, 409, action="accepted")
    assert world.feedback(alice, expired, action="opened")["status"] == "expired"
    assert world.feedback(alice, expired, action="dismissed")["status"] == "dismissed"


@pytest.mark.parametrize(("body", "field"), [
    ({}, "action"),
    ({"action": "liked"}, "action"),
    ({"action": 3}, "action"),
    ({"action": "snoozed", "snooze_min": 2}, "snooze_min"),
    ({"action": "snoozed", "snooze_min": 1441}, "snooze_min"),
    ({"action": "snoozed", "snooze_min": "30"}, "snooze_min"),
    ({"action": "dismissed", "snooze_min": 30}, "snooze_min"),
    ({"action": "opened", "rating": 5}, "rating"),
])
def test_bad_feedback_is_a_422_naming_the_field(world, body, field):
    alice = world.user("alice")
    sid = world.propose(alice, world.rule("spots"))
    problem = world.feedback(alice, sid, 422, **body)
    assert field in problem["errors"], problem
    assert world.get(alice, sid)["status"] == "new"


def test_the_mute_threshold_and_the_default_lifetime_are_settings(tmp_path):
    from tests.integration.conftest import close_app
    from tests.support.factories import make_app, make_settings

    app = make_app(make_settings(tmp_path / "var", mute_after_dismissals=2, suggestion_ttl_s=600))
    try:
        world = suggestion_world(app)
        alice = world.user("alice")
        rule = world.rule("spots")
        now = utcnow()
        first = world.propose(alice, rule, now=now)
        assert parse(world.get(alice, first)["expires_at"]) == now + timedelta(seconds=600)
        world.feedback(alice, first, action="dismissed")
        world.feedback(alice, world.propose(alice, rule), action="dismissed")
        third = world.get(alice, world.propose(alice, rule))
        assert third["status"] == "suppressed" and "2 times" in third["status_reason"]
    finally:
        close_app(app)
