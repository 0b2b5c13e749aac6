"""Push suggestions to each active device of their user, once, and again later when the push service asks.

Delivery runs in batches (:func:`smartsvc.services.delivery_batch.deliver_suggestions`;
:func:`deliver_suggestion` is a batch of one). Two transactions per batch,
whatever its size, so that a task run twice (or killed and run again) pushes
each device once:

1. claim: under the users' locks (taken in id order), a ``push_attempts`` row
   (``sending``) per device to push now — never pushed in this round, or its
   last try failed with a retry that is due — committed *before* anything is
   sent. Suggestions with nothing left to push (gone, acted on, waiting for
   quiet hours, expired, consent withdrawn, no device) are settled and their
   outbox messages completed in the same commit;
2. send every claimed push (each provider's :meth:`send_many`, concurrently
   where it can), then finish and settle in one commit: each try ``sent`` or
   ``failed`` (error, HTTP status, latency); a try the push service asked to
   repeat (429, 5xx, network) gets ``retry_at`` (backoff, or a longer
   ``Retry-After``) until the tries run out or the suggestion would expire
   first; a dead token deactivates the device; each suggestion's
   ``delivery_status`` — ``delivered`` when one device got it, ``pending``
   while no device did and retries are due later, ``failed`` when every
   device ended without it — and ``new`` → ``delivered``; with pending
   retries a delayed outbox message (its ``available_at`` the earliest
   ``retry_at``) brings the suggestion back. The outbox messages are
   completed in the same commit.

A claim left ``sending`` by a worker that died is taken over after
:func:`stale_after` (``SMARTSVC_PUSH_STALE_CLAIM_S``, default 2 min): that
device may then get it twice (at least once; the collapse key makes the
phone show one).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Sequence

from ..config import Settings
from ..delivery import PushMessage, PushProvider, PushResult, provider_for
from ..models import Device

log = logging.getLogger(__name__)


def stale_after(settings: Settings) -> timedelta:
    """How long a claim left ``sending`` is another worker's before it is taken over."""
    return timedelta(seconds=settings.push_stale_claim_s)


# Pushes of a batch not sent this long after its sends began fail as retryable (a slow or unreachable push
# service must not hold a task past its time limit); send_many providers keep their own budget.
SEND_BUDGET_S = 30.0
# A suggestion already on one of the user's phones still goes to the others that are due a retry.
PUSHABLE = ("new", "delivered")
ProviderChooser = Callable[[Any, Settings], PushProvider]


@dataclass(frozen=True)
class DeliveryReport:
    """What one run did: tries sent and failed now (``retrying`` of those failed are tried again later),
    and the suggestion's delivery status (None: unchanged)."""

    sent: int = 0
    failed: int = 0
    delivery_status: str | None = None
    retrying: int = 0


@dataclass(frozen=True)
class Claim:
    """One claimed try: its ``push_attempts`` row, the push to send and who sends it."""

    attempt_id: uuid.UUID
    message: PushMessage
    provider: PushProvider
    try_number: int
    round: int


def latest_tries(attempts: Iterable[Any]) -> dict[uuid.UUID, Any]:
    """Each device's try with the highest number: where that device stands in the round (``push_attempts``
    rows as :mod:`.delivery_rows` reads them)."""
    latest: dict[uuid.UUID, Any] = {}
    for attempt in attempts:
        if attempt.device_id not in latest or attempt.try_number > latest[attempt.device_id].try_number:
            latest[attempt.device_id] = attempt
    return latest


def stop(suggestion: Any, attempts: Sequence[Any]) -> str:
    """No more pushes in this round: what became of the delivery (``failed`` if a try was made and none got it).

    A first round that tried nothing (no device, consent withdrawn, expired first) sent nothing: its
    ``pushed_at`` is cleared, so that the attention budget does not count it as a push — against the
    day's cap, the rule's cooldown, or "the same content never twice" once the user has a phone.
    """
    if suggestion.delivery_status == "pending":
        suggestion.delivery_status = "failed" if attempts else "none"
        if not attempts and suggestion.push_round == 0:
            suggestion.pushed_at = None
    return suggestion.delivery_status


def _failed(started: float, exc: Exception) -> PushResult:
    return PushResult("failed", int((time.perf_counter() - started) * 1000), error=f"provider error: {exc}")


def _send_one(provider: PushProvider, message: PushMessage) -> PushResult:
    started = time.perf_counter()
    try:
        return provider.send(message)
    except Exception as exc:  # a provider bug must not lose the other devices' pushes
        log.exception("push provider failed", extra={"provider": provider.name})
        return _failed(started, exc)


_OUT_OF_TIME = PushResult("failed", 0, error="not sent: the batch ran out of time", retryable=True)


def send_claims(claims: Sequence[Claim]) -> list[PushResult]:
    """Send every claimed push, one :meth:`send_many` per provider (a loop over ``send`` when it has none).

    Never raises: a provider that fails outright fails its pushes (not retried: a bug, not the push service).
    Pushes still waiting :data:`SEND_BUDGET_S` after the first send fail as retryable.
    """
    deadline = time.monotonic() + SEND_BUDGET_S
    results: list[PushResult | None] = [None] * len(claims)
    groups: dict[int, list[int]] = defaultdict(list)
    providers: dict[int, PushProvider] = {}
    for index, claim in enumerate(claims):
        groups[id(claim.provider)].append(index)
        providers[id(claim.provider)] = claim.provider
    for key, indexes in groups.items():
        provider = providers[key]
        messages = [claims[i].message for i in indexes]
        send_many = getattr(provider, "send_many", None)
        if send_many is None:
            answers = [_send_one(provider, message) if time.monotonic() < deadline else _OUT_OF_TIME
                       for message in messages]
        else:
            started = time.perf_counter()
            try:
                answers = list(send_many(messages))
                if len(answers) != len(messages):
                    raise RuntimeError(f"{len(answers)} results for {len(messages)} pushes")
            except Exception as exc:
                log.exception("push provider failed", extra={"provider": provider.name})
                answers = [_failed(started, exc)] * len(messages)
        for i, answer in zip(indexes, answers):
            results[i] = answer
    return [result for result in results if result is not None]


def retry_delay(settings: Settings, try_number: int, retry_after_s: float | None) -> timedelta:
    """The wait after failed try ``try_number``: its backoff step (the last repeats) or ``Retry-After``, the longer."""
    steps = settings.push_retry_backoff_s
    backoff = steps[min(try_number, len(steps)) - 1]
    return timedelta(seconds=max(float(backoff), retry_after_s or 0.0))


def retry_at(settings: Settings, claim: Claim, result: PushResult, now: datetime) -> tuple[datetime | None, str]:
    """When to try again (None: never) and what to add to the error."""
    if result.ok or not result.retryable:
        return None, ""
    if claim.try_number >= settings.push_max_tries:
        return None, f" (gave up after {claim.try_number} tries)"
    when = now + retry_delay(settings, claim.try_number, result.retry_after_s)
    if when >= claim.message.expires_at:
        return None, " (not tried again: the suggestion expires first)"
    return when, ""


def registered_since(device: Device, dead_since: datetime | None) -> bool:
    """True when the device registered again after the push service saw its token die (APNs' timestamp)."""
    return dead_since is not None and max(device.created_at, device.last_seen_at) > dead_since


def deliver_suggestion(source: Any, suggestion_id: uuid.UUID, outbox_id: int | None = None, *,
                       now: datetime | None = None, choose: ProviderChooser = provider_for) -> DeliveryReport:
    """Push the suggestion to each active device that has not had it in this round, or is due a retry.

    ``source`` is the container or the database. Idempotent: a second run
    (a redelivered task) sends nothing more. ``now`` fixes the clock
    (tests); ``choose`` picks each device's provider (default: by settings).
    A batch of one (:func:`smartsvc.services.delivery_batch.deliver_suggestions`).
    """
    from .delivery_batch import deliver_suggestions  # it imports this module

    reports = deliver_suggestions(source, [(suggestion_id, outbox_id)], now=now, choose=choose)
    return reports.get(suggestion_id, DeliveryReport())
