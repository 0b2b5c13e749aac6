"""Feedback on a suggestion (opened, accepted, dismissed, snoozed): a status change, an interaction, a rule score.

What each action does from each status (the spec leaves invalid ones open):

- ``opened``: ``new``/``delivered``/``snoozed``/``suppressed``/``opened`` → ``opened``; on an
  ``accepted``, ``dismissed`` or ``expired`` one it is recorded and the status stays.
- ``accepted``: → ``accepted`` from every status but ``expired`` (409: its content is out of
  date). It resets the rule's dismissals in a row, unmutes the rule and doubles its score (at most 1).
- ``dismissed``: → ``dismissed`` from every status (dismissing an expired or suppressed one
  is fine). A first dismissal of a suggestion halves its rule's score and counts; reaching
  ``SMARTSVC_MUTE_AFTER_DISMISSALS`` in a row mutes the rule for the user. Dismissing one
  already dismissed is recorded but counts once.
- ``snoozed``: ``new``/``delivered``/``opened``/``snoozed`` → ``snoozed`` until now +
  ``snooze_min`` (5–1440, default 60), after which the beat job pushes it again (budget
  checked); on an ``accepted``, ``dismissed``, ``expired`` or ``suppressed`` one it is 409
  (there is nothing to push later: it is done, out of date, or the budget kept it back).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from ..db import Database
from ..errors import Conflict, InvalidInput, NotFound
from ..models import Suggestion, UserRuleScore
from ..timeutil import utcnow
from .suggestions import SuggestionView, load_view, lock_user, record_interaction
from .webhook_events import emit_event, feedback_event

ACTIONS = ("opened", "accepted", "dismissed", "snoozed")
SNOOZE_MIN_RANGE = (5, 1440)
DEFAULT_SNOOZE_MIN = 60
SCORE_ON_DISMISSAL = 0.5


def _next_status(current: str, action: str) -> str:
    """The status after ``action``; 409 for a transition that makes no sense."""
    if action == "opened":
        return current if current in ("accepted", "dismissed", "expired") else "opened"
    if action == "accepted":
        if current == "expired":
            raise Conflict("this suggestion has expired: its content is out of date and cannot be accepted",
                           errors={"action": ["cannot accept an expired suggestion"]})
        return "accepted"
    if action == "dismissed":
        return "dismissed"
    if current not in ("new", "delivered", "opened", "snoozed"):
        raise Conflict(f"a {current} suggestion cannot be snoozed: it would never be pushed again",
                       errors={"action": [f"cannot snooze a {current} suggestion"]})
    return "snoozed"


def _score(session: Session, user_id: uuid.UUID, rule_id: uuid.UUID, now: datetime) -> UserRuleScore:
    score = session.get(UserRuleScore, (user_id, rule_id))
    if score is None:
        score = UserRuleScore(user_id=user_id, rule_id=rule_id, score=1.0, dismissals=0, updated_at=now)
        session.add(score)
    return score


def _count(session: Session, suggestion: Suggestion, action: str, mute_after: int, now: datetime) -> dict:
    """Update the rule's score for the user; what changed, for the interaction."""
    if suggestion.rule_id is None:
        return {}
    if action == "dismissed":
        score = _score(session, suggestion.user_id, suggestion.rule_id, now)
        score.score = score.score * SCORE_ON_DISMISSAL
        score.dismissals += 1
        muted_now = score.muted_at is None and score.dismissals >= mute_after
        if muted_now:
            score.muted_at = now
        score.updated_at = now
        return {"rule_score": score.score, "dismissals_in_a_row": score.dismissals, "rule_muted": muted_now}
    if action == "accepted":
        score = _score(session, suggestion.user_id, suggestion.rule_id, now)
        unmuted = score.muted_at is not None
        score.score, score.dismissals, score.muted_at, score.updated_at = min(1.0, score.score * 2), 0, None, now
        return {"rule_score": score.score, "dismissals_in_a_row": 0, "rule_unmuted": unmuted}
    return {}


def give_feedback(database: Database, user_id: uuid.UUID, suggestion_id: uuid.UUID, action: str, *,
                  snooze_min: int | None = None, mute_after: int, now: datetime | None = None) -> SuggestionView:
    """Apply the user's ``action`` on one of their suggestions (someone else's is 404); every call is recorded."""
    if action not in ACTIONS:
        raise InvalidInput("action", f"must be one of {', '.join(ACTIONS)}")
    if snooze_min is not None and action != "snoozed":
        raise InvalidInput("snooze_min", "is only used with action 'snoozed'")
    if snooze_min is not None and not SNOOZE_MIN_RANGE[0] <= snooze_min <= SNOOZE_MIN_RANGE[1]:
        raise InvalidInput("snooze_min", f"must be between {SNOOZE_MIN_RANGE[0]} and {SNOOZE_MIN_RANGE[1]}")
    now = now or utcnow()
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        # Feedback of one user is applied one at a time (dismissal counts, the rule score).
        if lock_user(session, user_id) is None:
            raise NotFound(f"suggestion {suggestion_id} does not exist")
        suggestion = session.get(Suggestion, suggestion_id, populate_existing=True)
        if suggestion is None or suggestion.user_id != user_id:
            raise NotFound(f"suggestion {suggestion_id} does not exist")
        previous = suggestion.status
        status = _next_status(previous, action)
        data: dict = {"from": previous, "to": status}
        repeated = previous == status and action in ("accepted", "dismissed")
        if not repeated:
            data.update(_count(session, suggestion, action, int(mute_after), now))
        if action == "snoozed":
            minutes = snooze_min if snooze_min is not None else DEFAULT_SNOOZE_MIN
            suggestion.snoozed_until = now + timedelta(minutes=minutes)
            data["snooze_min"] = minutes
            data["snoozed_until"] = suggestion.snoozed_until
        elif status != previous:
            suggestion.snoozed_until = None
        suggestion.deliver_after = None  # a suggestion the user acted on no longer waits for quiet hours to end
        if status != previous and previous in ("new", "delivered", "snoozed"):
            suggestion.status_reason = None  # it said what it was waiting for; a suppression's reason stays
        suggestion.status = status
        if status in ("opened", "accepted", "dismissed") and suggestion.pushed_at is None \
                and suggestion.delivery_status == "pending":
            suggestion.delivery_status = "none"  # it waited for quiet hours to end: it will not be pushed now
        record_interaction(session, user_id, f"suggestion.{action}", subject_id=suggestion.id, data=data, at=now)
        emit_event(uow, "suggestion.feedback", f"user:{user_id}", feedback_event(suggestion, action, previous, now),
                   user_id=user_id, now=now)
        view = load_view(session, user_id, suggestion_id)  # before the commit: nothing is expired after it
        uow.commit()
    return view
