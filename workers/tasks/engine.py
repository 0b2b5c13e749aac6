"""The engine's task: run the rules on one trigger and propose the suggestions they make."""

from __future__ import annotations

import uuid

from celery import shared_task
from flask import current_app

from smartsvc.services.engine import handle_trigger
from smartsvc.services.triggers import HANDLE_TASK


@shared_task(name=HANDLE_TASK, ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def handle(trigger_id: str, outbox_id: int | None = None) -> int:
    """Idempotent: a trigger handled twice proposes its suggestions once (the second run only completes)."""
    return handle_trigger(current_app.extensions["smartsvc"], uuid.UUID(trigger_id), outbox_id)
