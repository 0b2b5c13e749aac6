"""Pure help-case rules: effort metrics, the snapshot shown after a consent change, and what a body may carry."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import marshmallow as ma
import pytest

from smartsvc.http.agent_help import AnswerSchema
from smartsvc.http.help import HelpCreateSchema
from smartsvc.models import HelpCase
from smartsvc.services.help import metrics
from smartsvc.services.help_snapshot import shown_snapshot

OPENED = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)


def case(**fields) -> HelpCase:
    return HelpCase(id=uuid.uuid4(), user_id=uuid.uuid4(), status="open", snapshot={}, created_at=OPENED,
                    updated_at=OPENED, user_active_at=OPENED, message_count=fields.pop("message_count", 1), **fields)


def test_metrics_before_and_after_the_first_answer_and_the_close():
    assert metrics(case()) == {"time_to_first_answer_s": None, "first_answered_at": None,
                               "messages_until_solved": None, "messages": 1}
    answered = case(first_answered_at=OPENED + timedelta(minutes=4, seconds=30), message_count=2)
    assert metrics(answered)["time_to_first_answer_s"] == 270.0
    closed = case(first_answered_at=OPENED + timedelta(seconds=1.25), message_count=5, messages_until_solved=5)
    assert (metrics(closed)["time_to_first_answer_s"], metrics(closed)["messages_until_solved"]) == (1.25, 5)


def test_a_withdrawn_location_consent_hides_the_stored_location():
    stored = {"location_shared": True, "location": {"lat": 52.52, "lon": 13.4}, "trip": {"id": "t"},
              "screen": {"name": "map"}}
    assert shown_snapshot(stored, location_granted=True) == stored
    hidden = shown_snapshot(stored, location_granted=False)
    assert (hidden["location_shared"], hidden["location"], hidden["trip"], hidden["screen"]) == \
        (False, None, None, {"name": "map"})
    assert stored["location"] == {"lat": 52.52, "lon": 13.4}  # the stored snapshot is not changed
    never = {"location_shared": False, "location": None, "trip": None}
    assert shown_snapshot(never, location_granted=True) == never


def test_a_request_needs_a_topic_and_a_message_and_names_are_checked():
    assert HelpCreateSchema().load({"topic": "charging", "message": "the flap is stuck"}) == {
        "topic": "charging", "message": "the flap is stuck", "screen": None, "product_id": None}
    with pytest.raises(ma.ValidationError) as error:
        HelpCreateSchema().load({})
    assert {"topic", "message"} <= set(error.value.messages)
    for body, field in (({"screen": ""}, "screen"), ({"screen": " \t"}, "screen"), ({"screen": "a\x07b"}, "screen"),
                        ({"message": "\n"}, "message"), ({"product_id": "car"}, "product_id"), ({"x": 1}, "x")):
        with pytest.raises(ma.ValidationError) as error:
            HelpCreateSchema().load({"topic": "t", "message": "m", **body})
        assert field in error.value.messages, body


def test_guidance_is_a_screen_and_an_optional_highlight():
    loaded = AnswerSchema().load({"text": "here", "guidance": {"screen": "charging"}})
    assert loaded["guidance"] == {"screen": "charging", "highlight": None}
    assert AnswerSchema().load({"text": "no guidance"})["guidance"] is None
    for guidance in ({"screen": ["a"]}, {"screen": "s" * 201}, {"screen": "s", "highlight": 3}, {"highlight": "h"},
                     {"screen": "s", "extra": "x"}, "charging"):
        with pytest.raises(ma.ValidationError) as error:
            AnswerSchema().load({"text": "x", "guidance": guidance})
        assert "guidance" in error.value.messages, guidance
