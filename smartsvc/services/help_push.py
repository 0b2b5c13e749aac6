"""The push that tells a user an agent answered their help case (docs/help.md "The push").

The answer becomes a suggestion of kind ``help_answer`` (its own dedupe key
per message, collapse key per case, a reason naming the case), stored and
pushed through the same path as every suggestion: the outbox message for
:data:`~smartsvc.services.suggestions.PUSH_TASK`, the push providers, the
attempts, retries and delivery status, consent checks at send time,
cancellation on consent withdrawal or erasure. Only the attention budget
is different, because the user asked for this push:

- ``proactive_push`` consent is still required (it is the one push consent
  the user has; without it the answer waits in the conversation);
- the daily cap, rule cooldowns and "already sent" do not apply: an answer
  the user is waiting for is never swallowed by a busy day;
- quiet hours hold it until they end — unless the user wrote to the case
  (or opened it) within :data:`USER_WAITING`: then they are awake and
  waiting, and it goes at once.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db import UnitOfWork
from ..models import HelpCase, HelpMessage, Suggestion, User
from . import attention
from .consents import has_consent
from .help_snapshot import HELP_ANSWER_KIND
from .suggestions import MAX_BODY_CHARS, apply_verdict, as_json, content_hash

USER_WAITING = timedelta(minutes=30)
# Long enough to survive a night of quiet hours; the answer itself stays in the case for good.
ANSWER_PUSH_TTL = timedelta(hours=24)
ANSWER_TITLE = "Support answered your question"
NO_PUSH_CONSENT = "no consent to pushes; the answer is in your help case"


def answer_verdict(session: Session, user: User, case: HelpCase, now: datetime, expires_at: datetime) -> attention.Verdict:
    """Push now, wait for the end of quiet hours, or (without push consent) not push at all."""
    if not has_consent(session, user.id, "proactive_push"):
        return attention.Verdict(attention.SUPPRESS, NO_PUSH_CONSENT)
    if now - case.user_active_at <= USER_WAITING:
        return attention.Verdict(attention.PUSH, "you are waiting for this answer")
    quiet_end = attention.quiet_hours_end(now, user.time_zone, user.quiet_hours_start, user.quiet_hours_end)
    if quiet_end is not None:
        if expires_at > quiet_end:
            return attention.Verdict(attention.DEFER, f"waiting for the end of quiet hours ({user.quiet_hours_end})",
                                     quiet_end)
        return attention.Verdict(attention.SUPPRESS, attention.QUIET_TOO_LATE)
    return attention.Verdict(attention.PUSH, "an answer to your help request")


def push_answer(uow: UnitOfWork, user: User, case: HelpCase, message: HelpMessage, now: datetime) -> Suggestion:
    """Store the ``help_answer`` suggestion of ``message`` and let :func:`answer_verdict` decide its push.

    The caller holds the user's row lock (the budget's rule) and commits.
    Idempotent on the message: a second call returns the stored suggestion.
    """
    session = uow.session
    assert session is not None
    dedupe_key = f"help:{message.id}"
    existing = session.scalar(select(Suggestion).where(Suggestion.dedupe_key == dedupe_key))
    if existing is not None:
        return existing
    body = message.text if len(message.text) <= MAX_BODY_CHARS else message.text[: MAX_BODY_CHARS - 1] + "…"
    payload = as_json({"help_case_id": case.id, "message_id": message.id, "guidance": message.guidance})
    expires_at = now + ANSWER_PUSH_TTL
    suggestion = Suggestion(
        user_id=user.id, rule_id=None, trigger_id=None, kind=HELP_ANSWER_KIND, title=ANSWER_TITLE, body=body,
        payload=payload,
        reason=as_json({"help_case": {"id": case.id, "topic": case.topic}, "message_id": message.id,
                        "why": "a support agent answered your help request"}),
        collapse_key=f"help:{case.id}", content_hash=content_hash(HELP_ANSWER_KIND, ANSWER_TITLE, body, payload),
        status="new", created_at=now, expires_at=expires_at, delivery_status="pending", dedupe_key=dedupe_key,
        push_round=0)
    session.add(suggestion)
    session.flush()
    apply_verdict(uow, suggestion, answer_verdict(session, user, case, now, expires_at), now)
    return suggestion
