"""Push delivery: one suggestion, or a batch of them, to each active device of their users."""

from __future__ import annotations

import uuid
from typing import Any

from celery import shared_task
from flask import current_app

from smartsvc.services.delivery import deliver_suggestion
from smartsvc.services.delivery_batch import PUSH_BATCH_TASK, deliver_suggestions
from smartsvc.services.suggestions import PUSH_TASK

# More items than the largest SMARTSVC_PUSH_BATCH_SIZE is not a batch the relay made.
MAX_BATCH_ITEMS = 1000


@shared_task(name=PUSH_TASK, ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def push(suggestion_id: str, outbox_id: int | None = None) -> dict[str, object]:
    """Idempotent: run twice (a redelivery), each device still gets the push once."""
    report = deliver_suggestion(current_app.extensions["smartsvc"], uuid.UUID(suggestion_id), outbox_id)
    return {"sent": report.sent, "failed": report.failed, "delivery_status": report.delivery_status}


@shared_task(name=PUSH_BATCH_TASK, ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def push_batch(items: list[dict[str, Any]]) -> dict[str, object]:
    """Push a batch of suggestions (``[{"suggestion_id", "outbox_id"}]``, as the relay groups them).

    Idempotent like :func:`push`: a redelivered batch sends nothing more.
    """
    if len(items) > MAX_BATCH_ITEMS:
        raise ValueError(f"{len(items)} items in one push batch (at most {MAX_BATCH_ITEMS})")
    pairs = [(uuid.UUID(item["suggestion_id"]), item.get("outbox_id")) for item in items]
    reports = deliver_suggestions(current_app.extensions["smartsvc"], pairs)
    return {"suggestions": len(reports), "sent": sum(r.sent for r in reports.values()),
            "failed": sum(r.failed for r in reports.values())}
