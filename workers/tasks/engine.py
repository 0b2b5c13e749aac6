"""The engine's tasks: run the rules on one trigger, or on a batch the relay grouped, and propose the
suggestions they make."""

from __future__ import annotations

import uuid
from typing import Any

from celery import shared_task
from flask import current_app

from smartsvc.services.engine import handle_trigger
from smartsvc.services.engine_batch import HANDLE_BATCH_TASK, handle_triggers
from smartsvc.services.triggers import HANDLE_TASK

# More items than the largest SMARTSVC_ENGINE_BATCH_SIZE is not a batch the relay made.
MAX_BATCH_ITEMS = 1000


@shared_task(name=HANDLE_TASK, ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def handle(trigger_id: str, outbox_id: int | None = None) -> int:
    """Idempotent: a trigger handled twice proposes its suggestions once (the second run only completes)."""
    return handle_trigger(current_app.extensions["smartsvc"], uuid.UUID(trigger_id), outbox_id)


@shared_task(name=HANDLE_BATCH_TASK, ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def handle_batch(items: list[dict[str, Any]]) -> int:
    """Run the rules on a batch of triggers (``[{"trigger_id", "outbox_id"}]``, as the relay groups them).

    Idempotent like :func:`handle`: a redelivered batch proposes nothing more.
    """
    if len(items) > MAX_BATCH_ITEMS:
        raise ValueError(f"{len(items)} items in one trigger batch (at most {MAX_BATCH_ITEMS})")
    pairs = [(uuid.UUID(item["trigger_id"]), item.get("outbox_id")) for item in items]
    return handle_triggers(current_app.extensions["smartsvc"], pairs)
