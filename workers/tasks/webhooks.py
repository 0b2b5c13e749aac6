"""Partner webhook delivery: one task per delivery, on the ``webhooks`` queue (workers/celery_app.py)."""

from __future__ import annotations

import uuid

from celery import shared_task
from flask import current_app

from smartsvc.services.webhook_delivery import deliver_webhook, release_stranded
from smartsvc.services.webhook_events import DELIVER_TASK


@shared_task(name=DELIVER_TASK, ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def deliver(delivery_id: str, outbox_id: int | None = None) -> str:
    """Idempotent: run twice (a redelivery), the delivery is still sent once per due attempt."""
    return deliver_webhook(current_app.extensions["smartsvc"], uuid.UUID(delivery_id), outbox_id)


@shared_task(name="smartsvc.webhooks.release_stranded", ignore_result=True, acks_late=True,
             reject_on_worker_lost=True)
def release_stranded_deliveries() -> int:
    """Scheduled: deliveries waiting for a slot of an endpoint nothing is sending to get one."""
    return release_stranded(current_app.extensions["smartsvc"].database)
