"""Push delivery: one suggestion to each active device of its user."""

from __future__ import annotations

import uuid

from celery import shared_task
from flask import current_app

from smartsvc.services.delivery import deliver_suggestion
from smartsvc.services.suggestions import PUSH_TASK


@shared_task(name=PUSH_TASK, ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def push(suggestion_id: str, outbox_id: int | None = None) -> dict[str, object]:
    """Idempotent: run twice (a redelivery), each device still gets the push once."""
    report = deliver_suggestion(current_app.extensions["smartsvc"], uuid.UUID(suggestion_id), outbox_id)
    return {"sent": report.sent, "failed": report.failed, "delivery_status": report.delivery_status}
