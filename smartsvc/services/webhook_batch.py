"""Batched webhook delivery: claim a batch in one transaction, send it, finish it in one more.

The rules are those of :mod:`.webhook_delivery` (read its docstring); what
changes is the cost. The outbox relay hands one task up to
``SMARTSVC_WEBHOOK_BATCH_SIZE`` due deliveries of one endpoint; the claim
(:mod:`.webhook_claims`) reads and writes them with a handful of statements,
the sends share kept-alive connections, and the finish
(:mod:`.webhook_outcomes`) settles them together. The whole batch is one
worker slot of its endpoint (``SMARTSVC_WEBHOOK_MAX_IN_FLIGHT`` counts
batches), and a batch stops sending when its endpoint fails to answer or
its time budget (:data:`SEND_BUDGET_S`) is spent: the deliveries it did not
send give their attempt back and wait for a slot, so a hanging endpoint
costs one timeout per batch, not one per delivery.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, Sequence

from ..db import Database
from ..delivery.httpcommon import send_while_fast
from ..timeutil import utcnow
from .webhook_claims import Claim, Item, claim
from .webhook_delivery import Sender, message_id, transport_options
from .webhook_outcomes import finish

__all__ = ["DELIVER_BATCH_TASK", "SEND_BUDGET_S", "SEND_CONCURRENCY", "Claim", "Item", "batches_per_endpoint",
           "claim", "deliver_webhooks", "finish", "send"]

log = logging.getLogger(__name__)

# The Celery task sending a batch of deliveries (workers/tasks/webhooks.py); the relay groups due
# deliveries of one endpoint into it.
DELIVER_BATCH_TASK = "smartsvc.webhooks.deliver_batch"
# A batch starts no new send after this long: a slow endpoint gives its slot back to the others regularly.
SEND_BUDGET_S = 5.0
# Sends of one batch in flight at once (after the endpoint's first answer): a partner's endpoint sees at most
# this many times SMARTSVC_WEBHOOK_MAX_IN_FLIGHT concurrent requests (4 × 8 by default). More batches with fewer
# threads each: a backlog to one endpoint is drained by 8 batches at once (BENCHMARKS.md, 7).
SEND_CONCURRENCY = 4


def batches_per_endpoint(messages: Sequence[Any]) -> list[list[Any]]:
    """Outbox messages of :data:`~.webhook_events.DELIVER_TASK` cut into one batch per endpoint (their
    ordering key), each in commit order: what the relay publishes as :data:`DELIVER_BATCH_TASK` tasks."""
    by_endpoint: dict[str | None, list[Any]] = {}
    for message in messages:
        by_endpoint.setdefault(message.ordering_key, []).append(message)
    return list(by_endpoint.values())


def _endpoint_trouble(outcome: Any) -> bool:
    """True when the answer says the endpoint itself is in trouble (no answer, 429, 5xx, 410), not this body."""
    return outcome.status_code is None or outcome.status_code in (410, 429) or outcome.status_code >= 500


def send(claims: Sequence[Claim], settings: Any, clock: Any, sender: Sender | None = None,
         budget_s: float = SEND_BUDGET_S, concurrency: int = SEND_CONCURRENCY
         ) -> tuple[list[tuple[Claim, Any]], list[Claim]]:
    """Sign and send the claims over kept-alive connections; (sent with outcomes, not sent), in claim order.

    Each endpoint's first claim goes alone; once it answered well the rest go
    one by one while the answers come faster than ``FAST_ANSWER_S``
    (:func:`~smartsvc.delivery.httpcommon.send_while_fast`), then
    ``concurrency`` at a time (deliveries of one subject are never claimed
    together, so their order holds). An endpoint that failed to answer gets
    nothing more from this batch, and no send starts after ``budget_s``: what
    is left is given back by :func:`finish`.
    """
    from ..webhooks.signing import sign_headers
    from ..webhooks.transport import make_client, send_webhook

    options = transport_options(settings)
    client = options["client"] = make_client(max_connections=concurrency)  # a ``sender`` gets it too
    started = time.monotonic()
    troubled: set[uuid.UUID] = set()
    outcomes: dict[int, Any] = {}
    lock = threading.Lock()

    def one(index: int) -> None:
        item = claims[index]
        with lock:
            if item.webhook_id in troubled or time.monotonic() - started > budget_s:
                return
        headers = sign_headers(message_id(item.delivery_id), clock(), item.body, item.secrets)
        outcome = (sender or send_webhook)(item.url, item.body, headers, **options)
        with lock:
            outcomes[index] = outcome
            if _endpoint_trouble(outcome):
                troubled.add(item.webhook_id)

    probes: dict[uuid.UUID, int] = {}  # each endpoint's first claim: is it answering at all?
    for index, item in enumerate(claims):
        probes.setdefault(item.webhook_id, index)
    rest = [i for i, item in enumerate(claims) if probes[item.webhook_id] != i]
    try:
        for index in probes.values():
            one(index)
        if concurrency > 1:  # not timed from the probes: a first send also opens the connection
            rest = send_while_fast(rest, one) or []
        if concurrency <= 1 or len(rest) <= 1:
            for index in rest:
                one(index)
        else:
            with ThreadPoolExecutor(min(concurrency, len(rest))) as pool:
                list(pool.map(one, rest))
    finally:
        client.close()
    sent = [(claims[i], outcomes[i]) for i in sorted(outcomes)]
    return sent, [claims[i] for i in range(len(claims)) if i not in outcomes]


def deliver_webhooks(source: Any, items: Sequence[Item], *, now: datetime | None = None,
                     sender: Sender | None = None, rng: random.Random | None = None) -> dict[uuid.UUID, str]:
    """Send a batch of deliveries (``(delivery_id, outbox_id)`` items); what became of each.

    ``source`` is the container or the database. Idempotent: run again (a
    redelivered task) nothing is sent a second time. ``now`` fixes the clock
    and ``sender`` replaces the HTTP transport (tests).
    """
    database: Database = getattr(source, "database", source)
    clock = (lambda: now) if now is not None else utcnow
    began = time.perf_counter()
    claims, statuses = claim(database, items, clock())
    if not claims:
        log.info("webhooks not sent", extra={"items": len(items),
                                             "claim_ms": round(1000 * (time.perf_counter() - began))})
        return statuses
    claimed_at = time.perf_counter()
    sent, unsent = send(claims, database.settings, clock, sender)
    sent_at = time.perf_counter()
    claimed = {c.delivery_id for c in claims}
    statuses.update(finish(database, sent, unsent, [o for d, o in items if d in claimed], clock(), rng))
    ok = sum(1 for _, outcome in sent if outcome.ok)
    log.info("webhooks sent", extra={
        "items": len(items), "sent": len(sent), "ok": ok, "not_sent": len(unsent),
        "latency_ms": max((o.latency_ms for _, o in sent), default=0),
        # where the batch's time went: a slow claim or finish is the database, a slow send the endpoint
        "claim_ms": round(1000 * (claimed_at - began)), "send_ms": round(1000 * (sent_at - claimed_at)),
        "finish_ms": round(1000 * (time.perf_counter() - sent_at))})
    return statuses
