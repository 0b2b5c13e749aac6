"""The attention budget end to end through the HTTP API (SQLite and PostgreSQL).

Unlike tests/integration/test_api_suggestions.py, which proposes suggestions
through the use case, here nothing is injected: the operator creates
``message`` rules on ``trip.started`` with ``POST /v1/rules``, users set
their consents and budget (``PUT /v1/me/consents/...``, ``PATCH /v1/me``)
and start trips with ``POST /v1/me/context``; the real worker tasks (engine,
pushes with the ``log`` provider) run in-process (:func:`run_outbox`). What
the user notices is read through ``GET /v1/me/suggestions`` and the pushes'
log. The budget is judged at the wall clock, so quiet hours are computed
around the real current time. Withdrawals that cancel already queued,
deferred or retried pushes are in tests/integration/test_consent_withdrawal.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from smartsvc.timeutil import utcnow
from tests.support.factories import TestUser as ApiUser
from tests.support.factories import api_key, bearer, grant, make_user
from tests.support.suggestions import parse
from tests.support.trust_world import post_context, pushes, run_outbox, set_consent

# No daylight-saving changes, and an offset that is not whole hours: local time is not UTC.
ZONE = "Asia/Kolkata"


def message_rule(name: str, title: str, *, cooldown_s: int = 0, priority: int = 1) -> dict[str, Any]:
    """A rule that says ``title`` when a trip starts (``{trip.mode}`` makes each trip's content its own)."""
    return {"name": name, "trigger": {"event": "trip.started"},
            "conditions": {"all": [{"fact": "user.weekday", "op": "exists"}]},
            "action": {"recipe": "message", "params": {"title": title, "body": "Trip by {trip.mode}"}},
            "priority": priority, "cooldown_s": cooldown_s, "enabled": True}


@dataclass
class World:
    app: Any
    client: Any
    operator: str
    app_key: str
    # Events a few minutes in the past, each later than the one before (same user, type and time: ignored).
    next_at: datetime = field(default_factory=lambda: utcnow().replace(microsecond=0) - timedelta(minutes=5))

    def rule(self, body: dict[str, Any]) -> str:
        response = self.client.post("/v1/rules", json=body, headers=bearer(self.operator))
        assert response.status_code == 201, response.get_json()
        return response.get_json()["id"]

    def user(self, name: str, **profile: Any) -> ApiUser:
        """A user with one phone, ``proactive_push`` granted, and ``profile`` set with ``PATCH /v1/me``."""
        user = make_user(self.client, self.app_key, name, time_zone=ZONE)
        grant(self.client, user, "proactive_push")
        response = self.client.post("/v1/me/devices", json={"platform": "fcm", "token": f"{name}-phone"},
                                    headers=user.headers)
        assert response.status_code == 201, response.get_json()
        if profile:
            response = self.client.patch("/v1/me", json=profile, headers=user.headers)
            assert response.status_code == 200, response.get_json()
        return user

    def trip(self, user: ApiUser, mode: str = "car") -> list[dict[str, Any]]:
        """``user`` starts a trip; the worker runs; the user's new suggestions (inbox order: newest first)."""
        before = {item["id"] for item in self.inbox(user)}
        self.next_at += timedelta(seconds=10)
        post_context(self.client, user, {"type": "trip", "at": self.next_at, "mode": mode,
                                         "destination": {"lat": 48.85, "lon": 2.35}})
        run_outbox(self.app)
        return [item for item in self.inbox(user) if item["id"] not in before]

    def inbox(self, user: ApiUser) -> list[dict[str, Any]]:
        response = self.client.get("/v1/me/suggestions", headers=user.headers)
        assert response.status_code == 200, response.get_json()
        return response.get_json()["items"]

    def get(self, user: ApiUser, suggestion_id: str) -> dict[str, Any]:
        response = self.client.get(f"/v1/me/suggestions/{suggestion_id}", headers=user.headers)
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    def decided(self, user: ApiUser, suggestion_id: str) -> dict[str, Any]:
        """The status the budget gave it when it was made, as the interaction journal recorded it."""
        response = self.client.get("/v1/me/interactions?kind=suggestion.created&limit=500", headers=user.headers)
        assert response.status_code == 200, response.get_json()
        [item] = [i for i in response.get_json()["items"] if i["subject"]["id"] == suggestion_id]
        return item["data"]

    def pushed(self) -> list[tuple[str, str]]:
        """(user id, suggestion id) of each push the log provider wrote."""
        return [(line["user_id"], line["suggestion_id"]) for line in pushes(self.app)]


@pytest.fixture
def world(db_app, db_client) -> World:
    return World(db_app, db_client, api_key(db_app, "operator"), api_key(db_app, "app"))


def quiet_hours_until(end: datetime) -> tuple[dict[str, str], datetime]:
    """Quiet hours (local HH:MM) from an hour ago until ``end`` (to the minute), and the instant they end."""
    zone, now = ZoneInfo(ZONE), utcnow()
    end = end.replace(second=0, microsecond=0)
    hhmm = {"start": (now - timedelta(hours=1)).astimezone(zone).strftime("%H:%M"),
            "end": end.astimezone(zone).strftime("%H:%M")}
    return hhmm, end


def test_quiet_hours_defer_what_outlives_them_and_drop_what_would_expire_first(world):
    world.rule(message_rule("trip start", "Have a good trip"))
    ttl = timedelta(seconds=world.app.extensions["smartsvc"].settings.suggestion_ttl_s)
    assert ttl <= timedelta(hours=20)  # both windows below must fit in a day
    short, short_end = quiet_hours_until(utcnow() + ttl - timedelta(hours=2))  # ends before the suggestion expires
    long, _ = quiet_hours_until(utcnow() + ttl + timedelta(hours=2))  # ends after it expired
    waits, drops = world.user("waits", quiet_hours=short), world.user("drops", quiet_hours=long)

    [deferred] = world.trip(waits)
    [dropped] = world.trip(drops)

    assert world.pushed() == []
    assert (deferred["status"], deferred["delivery_status"]) == ("new", "pending")
    assert "quiet hours" in deferred["status_reason"] and short["end"] in deferred["status_reason"]
    assert parse(deferred["deliver_after"]) == short_end < parse(deferred["expires_at"])
    assert (dropped["status"], dropped["delivery_status"], dropped["deliver_after"]) == ("suppressed", "none", None)
    assert "quiet hours" in dropped["status_reason"] and "expired before they end" in dropped["status_reason"]


def test_the_daily_cap_stops_the_push_after_the_users_limit(world):
    for n, title in enumerate(("Coffee on the way", "Fuel is cheap today", "Traffic ahead")):
        world.rule(message_rule(f"rule {n}", title, priority=10 - n))
    alice = world.user("alice", max_pushes_per_day=2)

    suggestions = world.trip(alice)

    assert len(suggestions) == 3 and len({s["title"] for s in suggestions}) == 3
    delivered = [s for s in suggestions if s["status"] == "delivered"]
    suppressed = [s for s in suggestions if s["status"] == "suppressed"]
    assert sorted(world.pushed()) == sorted((alice.id, s["id"]) for s in delivered)
    assert (len(delivered), len(suppressed)) == (2, 1)
    assert suppressed[0]["title"] == "Traffic ahead"  # rules run highest priority first: the last one is capped
    assert suppressed[0]["status_reason"] == "daily limit: 2 pushes a day reached"
    assert suppressed[0]["delivery_status"] == "none"


def test_a_rules_cooldown_holds_back_its_next_push_to_the_same_user_only(world):
    world.rule(message_rule("trip start", "Have a good trip", cooldown_s=3600))
    alice, bob = world.user("alice"), world.user("bob")

    [first] = world.trip(alice, "car")
    [too_soon] = world.trip(alice, "bike")  # other content: only the cooldown holds it back
    [bobs] = world.trip(bob, "car")

    assert world.pushed() == [(alice.id, first["id"]), (bob.id, bobs["id"])]
    assert (first["status"], bobs["status"]) == ("delivered", "delivered")
    assert (too_soon["status"], too_soon["delivery_status"]) == ("suppressed", "none")
    assert too_soon["status_reason"].startswith("cooldown:") and "1 h" in too_soon["status_reason"]
    assert world.get(alice, first["id"])["status"] == "delivered"  # not replaced by the suppressed one


def test_withdrawing_proactive_push_keeps_suggestions_in_the_inbox_unpushed_until_granted_again(world):
    world.rule(message_rule("trip start", "Have a good trip"))
    alice = world.user("alice")

    [before] = world.trip(alice, "car")
    set_consent(world.client, alice, "proactive_push", False)
    [withdrawn] = world.trip(alice, "bike")
    assert (withdrawn["status"], withdrawn["delivery_status"]) == ("suppressed", "none")
    assert "consent" in withdrawn["status_reason"] and "push" in withdrawn["status_reason"]
    assert world.pushed() == [(alice.id, before["id"])]
    # The budget itself held it back (not only the push worker's own consent check).
    assert world.decided(alice, withdrawn["id"])["status"] == "suppressed"

    set_consent(world.client, alice, "proactive_push", True)
    [after] = world.trip(alice, "bus")
    assert after["status"] == "delivered"
    assert world.pushed() == [(alice.id, before["id"]), (alice.id, after["id"])]
    assert world.get(alice, withdrawn["id"])["status"] == "suppressed"  # stays in the inbox as it was


def test_a_push_that_found_no_phone_does_not_count_against_the_day_or_the_content(world):
    world.rule(message_rule("trip start", "Have a good trip"))
    alice = make_user(world.client, world.app_key, "alice", time_zone=ZONE)  # no phone yet
    grant(world.client, alice, "proactive_push")
    response = world.client.patch("/v1/me", json={"max_pushes_per_day": 1}, headers=alice.headers)
    assert response.status_code == 200, response.get_json()

    [unheard] = world.trip(alice, "car")
    assert (unheard["status"], unheard["delivery_status"]) == ("new", "none")  # in the inbox, pushed to nobody
    response = world.client.post("/v1/me/devices", json={"platform": "fcm", "token": "alice-phone"},
                                 headers=alice.headers)
    assert response.status_code == 201, response.get_json()
    [heard] = world.trip(alice, "car")  # the same content, within the day's cap of 1: nothing was pushed yet

    assert (heard["status"], heard["delivery_status"]) == ("delivered", "delivered")
    assert world.pushed() == [(alice.id, heard["id"])]
