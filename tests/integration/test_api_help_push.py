"""The push of an agent's answer and the attention budget: the user asked, so the daily cap does not swallow it;
quiet hours hold it unless the user is waiting right now; without push consent it stays in the conversation.

The clock is injected into the help use cases; what the user notices is read back through the API and the push log.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from smartsvc.services import help as help_cases
from smartsvc.services.keys import create_key
from smartsvc.services.suggestion_timers import run_timers
from tests.support.suggestions import SuggestionWorld, berlin, parse, suggestion_world


@pytest.fixture
def world(db_app) -> SuggestionWorld:
    return suggestion_world(db_app)


@pytest.fixture
def agent(db_app) -> uuid.UUID:
    return create_key(db_app.extensions["smartsvc"].database, "agent", "night shift").key.id


def open_and_answer(world, agent, user, opened_at, answered_at, text="Try restarting the charger."):
    case = help_cases.open_case(world.database, uuid.UUID(user.id), message="no charging", now=opened_at).case
    help_cases.agent_answer(world.database, agent, case.id, text, now=answered_at)
    return str(case.id)


def answers(world, user):
    return [s for s in world.inbox(user) if s["kind"] == "help_answer"]


def test_the_daily_cap_does_not_swallow_an_answer(world, agent):
    alice = world.user("alice", max_pushes_per_day=1)
    now = berlin(2026, 3, 10, 12, 0)
    world.propose(alice, None, now=now, title="Charger nearby")
    open_and_answer(world, agent, alice, now + timedelta(minutes=1), now + timedelta(minutes=5))
    world.deliver(now=now + timedelta(minutes=5))
    assert [p["title"] for p in world.pushes()] == ["Charger nearby", "Support answered your question"]
    # The answer was a push too: the next proactive one finds the day's budget spent.
    later = world.propose(alice, None, now=now + timedelta(minutes=10), title="Another charger")
    assert world.get(alice, later)["status_reason"] == "daily limit: 1 pushes a day reached"


def test_quiet_hours_hold_an_answer_unless_the_user_is_waiting(world, agent):
    alice = world.user("alice")
    world.patch_me(alice, quiet_hours={"start": "22:00", "end": "07:00"})

    # Asked in the evening, answered in the night: it waits for the morning.
    open_and_answer(world, agent, alice, berlin(2026, 3, 10, 21, 0), berlin(2026, 3, 10, 23, 30))
    [waiting] = answers(world, alice)
    assert parse(waiting["deliver_after"]) == berlin(2026, 3, 11, 7, 0)
    world.deliver(now=berlin(2026, 3, 10, 23, 30))
    assert world.pushes() == []
    run_timers(world.database, now=berlin(2026, 3, 11, 7, 1))
    world.deliver(now=berlin(2026, 3, 11, 7, 1))
    assert [p["suggestion_id"] for p in world.pushes()] == [waiting["id"]]

    # Asked in the night, answered ten minutes later: the user is awake and waiting.
    case_id = open_and_answer(world, agent, alice, berlin(2026, 3, 11, 23, 0), berlin(2026, 3, 11, 23, 10),
                              text="The flap opens from the app.")
    world.deliver(now=berlin(2026, 3, 11, 23, 10))
    assert [p["body"] for p in world.pushes()][-1] == "The flap opens from the app."
    assert answers(world, alice)[0]["payload"]["help_case_id"] == case_id


def test_without_push_consent_the_answer_is_only_in_the_conversation(world, agent):
    alice = world.user("alice", consent=False)
    case_id = open_and_answer(world, agent, alice, berlin(2026, 3, 10, 12, 0), berlin(2026, 3, 10, 12, 3))
    world.deliver()
    assert world.pushes() == []
    [answer] = answers(world, alice)
    assert (answer["status"], answer["delivery_status"]) == ("suppressed", "none")
    case = world.client.get(f"/v1/me/help/{case_id}", headers=alice.headers).get_json()
    assert [m["author"] for m in case["messages"]] == ["user", "agent"]
    assert case["metrics"]["time_to_first_answer_s"] == 180.0
