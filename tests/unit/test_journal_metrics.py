"""Effort metrics of the journal: time to action per suggestion, customer effort per help case."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from smartsvc.services.journal import help_metrics, suggestion_metrics

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_time_to_action_runs_from_the_first_push_to_the_first_opening_acceptance_or_dismissal():
    metrics = suggestion_metrics([("suggestion.created", at(0)), ("suggestion.pushed", at(10)),
                                  ("suggestion.pushed", at(11)), ("suggestion.snoozed", at(20)),
                                  ("suggestion.opened", at(70)), ("suggestion.accepted", at(90))])
    assert (metrics["action"], metrics["time_to_action_s"], metrics["measured_from"]) == ("opened", 60.0, "pushed")
    assert (metrics["pushed_at"], metrics["action_at"]) == (at(10), at(70))


def test_an_action_in_the_inbox_before_the_push_is_measured_from_the_creation():
    metrics = suggestion_metrics([("suggestion.created", at(0)), ("suggestion.dismissed", at(5)),
                                  ("suggestion.pushed", at(10))])
    assert (metrics["action"], metrics["time_to_action_s"], metrics["measured_from"]) == ("dismissed", 5.0, "created")


def test_no_action_yet_has_no_time_to_action():
    metrics = suggestion_metrics([("suggestion.created", at(0)), ("suggestion.pushed", at(1))])
    assert (metrics["action"], metrics["time_to_action_s"], metrics["measured_from"]) == (None, None, None)
    assert metrics["pushed_at"] == at(1)


def test_help_effort_counts_messages_until_the_case_is_closed():
    metrics = help_metrics([("help.requested", at(0)), ("help.message", at(30)), ("help.answered", at(120)),
                            ("help.message", at(150)), ("help.answered", at(200)), ("help.closed", at(210)),
                            ("help.message", at(300))])
    assert metrics["time_to_first_answer_s"] == 120.0 and metrics["first_answer_at"] == at(120)
    assert (metrics["solved"], metrics["messages_until_solved"], metrics["closed_at"]) == (True, 5, at(210))


def test_an_open_unanswered_case_has_no_answer_time_and_is_not_solved():
    metrics = help_metrics([("help.requested", at(0)), ("help.message", at(30))])
    assert (metrics["time_to_first_answer_s"], metrics["solved"], metrics["messages_until_solved"],
            metrics["messages"]) == (None, False, None, 2)
