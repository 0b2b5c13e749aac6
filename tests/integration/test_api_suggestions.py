"""Suggestions and the attention budget through the API (SQLite and PostgreSQL).

Consent, quiet hours, the daily cap and devices are set up through the API
(``PATCH /v1/me``, ``PUT /v1/me/consents/proactive_push``, ``POST
/v1/me/devices``); suggestions come from ``propose``; delivery and the beat
job's timers run with an injected clock; statuses and reasons are read through
``GET /v1/me/suggestions`` and the pushes from ``var/pushes.jsonl``.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from smartsvc.services.suggestion_timers import run_timers
from smartsvc.timeutil import utcnow
from tests.support.suggestions import SuggestionWorld, berlin, parse, suggestion_world


@pytest.fixture
def world(db_app) -> SuggestionWorld:
    return suggestion_world(db_app)


def test_consent_to_proactive_pushes_and_its_withdrawal(world):
    alice = world.user("alice", consent=False)
    rule = world.rule("spots")
    before = world.propose(alice, rule)
    world.consent(alice, True)
    granted = world.propose(alice, rule)
    world.deliver()
    world.consent(alice, False)
    withdrawn = world.propose(alice, rule)
    world.deliver()
    assert [line["suggestion_id"] for line in world.pushes()] == [granted]

    by_id = {item["id"]: item for item in world.inbox(alice)}
    assert (by_id[before]["status"], by_id[before]["status_reason"]) == ("suppressed", "no consent to proactive pushes")
    assert by_id[granted]["status"] == "delivered"
    assert (by_id[withdrawn]["status"], by_id[withdrawn]["status_reason"], by_id[withdrawn]["delivery_status"]) == \
        ("suppressed", "no consent to proactive pushes", "none")


def test_a_consent_withdrawn_before_the_push_goes_out_stops_it(world):
    alice = world.user("alice")
    sid = world.propose(alice, world.rule("spots"))
    world.consent(alice, False)
    world.deliver()
    assert world.pushes() == []
    detail = world.get(alice, sid)
    assert (detail["status"], detail["status_reason"], detail["delivery_status"]) == \
        ("suppressed", "no consent to proactive pushes", "none")


def test_quiet_hours_defer_a_push_until_they_end_and_the_beat_releases_it(world):
    alice = world.user("alice")
    world.patch_me(alice, quiet_hours={"start": "22:00", "end": "07:00"})
    rule = world.rule("spots")
    night = berlin(2026, 1, 14, 23, 30)
    waiting = world.propose(alice, rule, now=night, expires_at=night + timedelta(hours=12))
    dropped = world.propose(alice, world.rule("other"), now=night, expires_at=night + timedelta(hours=2))
    world.deliver(now=night)
    assert world.pushes() == []

    by_id = {item["id"]: item for item in world.inbox(alice)}
    assert by_id[waiting]["status"] == "new" and "quiet hours" in by_id[waiting]["status_reason"]
    assert parse(by_id[waiting]["deliver_after"]) == berlin(2026, 1, 15, 7, 0)
    assert (by_id[dropped]["status"], by_id[dropped]["status_reason"]) == \
        ("suppressed", "quiet hours; it would have expired before they end")

    assert run_timers(world.database, now=berlin(2026, 1, 15, 6, 59)).released == 0
    world.deliver(now=berlin(2026, 1, 15, 6, 59))
    assert world.pushes() == []
    assert run_timers(world.database, now=berlin(2026, 1, 15, 7, 0)).released == 1
    world.deliver(now=berlin(2026, 1, 15, 7, 0))
    assert [line["suggestion_id"] for line in world.pushes()] == [waiting]
    detail = world.get(alice, waiting)
    assert (detail["status"], detail["delivery_status"], detail["deliver_after"], detail["status_reason"]) == \
        ("delivered", "delivered", None, None)
    assert run_timers(world.database, now=berlin(2026, 1, 15, 7, 1)).released == 0


def test_a_released_suggestion_meets_the_budget_again(world):
    alice = world.user("alice")
    world.patch_me(alice, quiet_hours={"start": "22:00", "end": "07:00"})
    night = berlin(2026, 1, 14, 23, 30)
    sid = world.propose(alice, world.rule("spots"), now=night, expires_at=night + timedelta(hours=12))
    world.consent(alice, False)  # withdrawn during the night
    run_timers(world.database, now=berlin(2026, 1, 15, 7, 0))
    world.deliver(now=berlin(2026, 1, 15, 7, 0))
    assert world.pushes() == []
    assert world.get(alice, sid)["status_reason"] == "no consent to proactive pushes"


def test_the_daily_cap_counts_the_users_local_day(world):
    # New York: 10:00 and 20:00 local on 14 January are on two UTC days but one local day.
    alice = world.user("alice", time_zone="America/New_York", max_pushes_per_day=2)
    morning = datetime(2026, 1, 14, 15, 0, tzinfo=timezone.utc)  # 10:00 EST
    evening = datetime(2026, 1, 15, 1, 0, tzinfo=timezone.utc)  # 20:00 EST
    next_day = datetime(2026, 1, 15, 6, 0, tzinfo=timezone.utc)  # 01:00 EST on the 15th
    first = world.propose(alice, world.rule("a"), now=morning)
    world.deliver(now=morning)
    second = world.propose(alice, world.rule("b"), now=evening)
    third = world.propose(alice, world.rule("c"), now=evening + timedelta(minutes=1))
    world.deliver(now=evening)
    fourth = world.propose(alice, world.rule("d"), now=next_day)
    world.deliver(now=next_day)
    assert [line["suggestion_id"] for line in world.pushes()] == [first, second, fourth]
    by_id = {item["id"]: item for item in world.inbox(alice)}
    assert (by_id[third]["status"], by_id[third]["status_reason"]) == \
        ("suppressed", "daily limit: 2 pushes a day reached")


def test_a_rules_cooldown_is_per_user(world):
    alice, bob = world.user("alice"), world.user("bob")
    rule = world.rule("spots", cooldown_s=3600)
    start = utcnow()
    first = world.propose(alice, rule, now=start, cooldown_s=3600)
    world.deliver(now=start)  # before the next one of the rule replaces it (same collapse key)
    too_soon = world.propose(alice, rule, now=start + timedelta(minutes=30), cooldown_s=3600)
    bobs = world.propose(bob, rule, now=start + timedelta(minutes=30), cooldown_s=3600)
    world.deliver(now=start + timedelta(minutes=30))
    later = world.propose(alice, rule, now=start + timedelta(minutes=61), cooldown_s=3600)
    world.deliver(now=start + timedelta(minutes=61))
    assert [line["suggestion_id"] for line in world.pushes()] == [first, bobs, later]
    detail = world.get(alice, too_soon)
    assert detail["status"] == "suppressed" and detail["status_reason"].startswith("cooldown:")
    assert "1 h" in detail["status_reason"]


def test_the_same_content_is_never_pushed_twice(world):
    alice = world.user("alice")
    content = {"title": "Charger on your route", "body": "Ionity Leipheim, 150 kW", "payload": {"charger": "x"}}
    first = world.propose(alice, world.rule("a"), **content)
    repeat = world.propose(alice, world.rule("b"), **content)  # another trigger, another rule
    changed = world.propose(alice, world.rule("c"), **{**content, "body": "Ionity Leipheim, 350 kW"})
    world.deliver()
    assert [line["suggestion_id"] for line in world.pushes()] == [first, changed]
    assert world.get(alice, repeat)["status_reason"] == "already sent"


def test_a_newer_suggestion_with_the_same_collapse_key_replaces_the_older(world):
    alice = world.user("alice")
    rule = world.rule("spots")
    older = world.propose(alice, rule, collapse_key="trip-7")
    world.deliver()
    other = world.propose(alice, world.rule("other"), collapse_key="trip-8")
    newer = world.propose(alice, rule, collapse_key="trip-7")
    world.deliver()
    by_id = {item["id"]: item for item in world.inbox(alice)}
    assert (by_id[older]["status"], by_id[older]["status_reason"]) == ("expired", "replaced by a newer suggestion")
    assert by_id[newer]["status"] == by_id[other]["status"] == "delivered"
    assert [line["collapse_key"] for line in world.pushes()] == ["trip-7", "trip-8", "trip-7"]


def test_the_beat_expires_what_outlived_its_use(world):
    alice = world.user("alice")
    now = utcnow()
    sid = world.propose(alice, world.rule("spots"), now=now, expires_at=now + timedelta(minutes=10))
    world.deliver(now=now)
    assert run_timers(world.database, now=now + timedelta(minutes=9)).expired == 0
    assert run_timers(world.database, now=now + timedelta(minutes=10)).expired == 1
    detail = world.get(alice, sid)
    assert (detail["status"], detail["status_reason"], detail["delivery_status"]) == \
        ("expired", "expired", "delivered")


def test_a_suggestion_acted_on_before_its_push_is_not_pushed(world):
    alice = world.user("alice")
    world.patch_me(alice, quiet_hours={"start": "22:00", "end": "07:00"})
    night = berlin(2026, 1, 14, 23, 30)
    waiting = world.propose(alice, world.rule("night"), now=night, expires_at=night + timedelta(hours=12))
    world.patch_me(alice, quiet_hours=None)
    queued = world.propose(alice, world.rule("day"))
    world.feedback(alice, queued, action="dismissed")  # seen in the inbox before the worker pushed it
    world.feedback(alice, waiting, action="opened")
    world.deliver()
    run_timers(world.database, now=berlin(2026, 1, 15, 7, 0))
    world.deliver(now=berlin(2026, 1, 15, 7, 0))
    assert world.pushes() == []
    by_id = {item["id"]: item for item in world.inbox(alice)}
    assert (by_id[queued]["status"], by_id[queued]["delivery_status"]) == ("dismissed", "none")
    assert (by_id[waiting]["status"], by_id[waiting]["delivery_status"]) == ("opened", "none")


# --------------------------------------------------------------------------- the inbox


def test_another_users_suggestion_is_not_found(world):
    alice, bob = world.user("alice"), world.user("bob")
    sid = world.propose(alice, world.rule("spots"))
    assert world.client.get(f"/v1/me/suggestions/{sid}", headers=bob.headers).status_code == 404
    response = world.client.post(f"/v1/me/suggestions/{sid}/feedback", headers=bob.headers,
                                 json={"action": "dismissed"})
    assert response.status_code == 404 and response.mimetype == "application/problem+json"
    assert world.client.get(f"/v1/me/suggestions/{uuid.uuid4()}", headers=alice.headers).status_code == 404
    assert world.inbox(bob) == []
    assert world.get(alice, sid)["status"] == "new"


def test_the_inbox_is_newest_first_in_pages_and_filters_by_status(world):
    alice = world.user("alice", consent=False)
    rule = world.rule("spots")
    ids = [world.propose(alice, rule) for _ in range(5)]
    world.consent(alice, True)
    pushed = world.propose(alice, rule)

    first = world.client.get("/v1/me/suggestions?limit=4", headers=alice.headers).get_json()
    assert [item["id"] for item in first["items"]] == [pushed, *ids[::-1][:3]]
    second = world.client.get(f"/v1/me/suggestions?limit=4&cursor={first['next_cursor']}",
                              headers=alice.headers).get_json()
    assert [item["id"] for item in second["items"]] == ids[1::-1] and second["next_cursor"] is None
    assert [item["id"] for item in world.inbox(alice, status="suppressed")] == ids[::-1]
    assert [item["id"] for item in world.inbox(alice, status="new")] == [pushed]

    for query, field in (({"status": "lost"}, "status"), ({"limit": 0}, "limit"), ({"cursor": "nope"}, "cursor")):
        response = world.client.get("/v1/me/suggestions", headers=alice.headers, query_string=query)
        assert response.status_code == 422 and field in response.get_json()["errors"], response.get_json()
