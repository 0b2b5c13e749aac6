"""Partner webhook delivery on the ``webhooks`` queue (workers/celery_app.py): batches per endpoint, as the
outbox relay groups them, and single deliveries."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

from celery import shared_task
from flask import current_app

from smartsvc.services.webhook_batch import DELIVER_BATCH_TASK, deliver_webhooks
from smartsvc.services.webhook_delivery import deliver_webhook, release_stranded
from smartsvc.services.webhook_events import DELIVER_TASK
# What a batch's send loads on first use (~8 ms): loaded here, the worker's main process has it before its pool
# forks, instead of every child on its first batch (a backlog meets a pool of cold children at once).
from smartsvc.webhooks import signing, transport  # noqa: F401


@shared_task(name=DELIVER_TASK, ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def deliver(delivery_id: str, outbox_id: int | None = None) -> str:
    """Idempotent: run twice (a redelivery), the delivery is still sent once per due attempt."""
    return deliver_webhook(current_app.extensions["smartsvc"], uuid.UUID(delivery_id), outbox_id)


@shared_task(name=DELIVER_BATCH_TASK, ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def deliver_batch(items: list[dict[str, Any]]) -> dict[str, int]:
    """Deliveries of one endpoint (``{"delivery_id", "outbox_id"}`` each); idempotent as :func:`deliver`. How many
    became of each status (the worker logs it: one line a batch, not 200 ids)."""
    statuses = deliver_webhooks(current_app.extensions["smartsvc"],
                                [(uuid.UUID(item["delivery_id"]), item.get("outbox_id")) for item in items])
    return dict(Counter(statuses.values()))


@shared_task(name="smartsvc.webhooks.release_stranded", ignore_result=True, acks_late=True,
             reject_on_worker_lost=True)
def release_stranded_deliveries() -> int:
    """Scheduled: deliveries waiting for a slot of an endpoint nothing is sending to get one."""
    return release_stranded(current_app.extensions["smartsvc"].database)
